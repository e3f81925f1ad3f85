#include "parallel/process_groups.h"

#include <sstream>
#include <utility>

namespace stas::parallel {

Result<GroupLayout> GroupLayout::For(int world_size, int world_rank, int sp, int cfg) {
  if (sp < 1) return InvalidArgument("--sp must be at least 1, got " + std::to_string(sp));
  if (cfg != 1 && cfg != 2) {
    return InvalidArgument("the CFG-parallel degree must be 1 or 2, got " + std::to_string(cfg));
  }
  if (world_size < 1 || world_rank < 0 || world_rank >= world_size) {
    return InvalidArgument("world rank " + std::to_string(world_rank) + " is outside a world of " +
                           std::to_string(world_size));
  }
  const int group_size = sp * cfg;
  if (world_size % group_size != 0) {
    std::ostringstream m;
    m << "--sp " << sp << (cfg == 2 ? " with --cfg-parallel" : "") << " makes groups of " << group_size
      << " ranks, which do not tile the " << world_size << " MPI ranks: launch a multiple of " << group_size
      << " ranks (mpirun -np " << group_size << ", " << 2 * group_size << ", ...)";
    return InvalidArgument(m.str());
  }
  GroupLayout layout;
  layout.world_size = world_size;
  layout.world_rank = world_rank;
  layout.sp = sp;
  layout.cfg = cfg;
  return layout;
}

std::string GroupLayout::ToString() const {
  std::ostringstream m;
  m << "world rank " << world_rank << " of " << world_size << ": group " << group_index() << " of "
    << group_count() << ", sequence rank " << sequence_rank() << " of " << sp;
  if (cfg == 2) m << ", " << (branch() == models::CfgBranch::kCond ? "cond" : "uncond") << " branch";
  return m.str();
}

Result<ProcessGroups> ProcessGroups::Create(MPI_Comm world, int sp, int cfg) {
  int world_size = 0;
  int world_rank = 0;
  STAS_MPI_CHECK(MPI_Comm_size(world, &world_size));
  STAS_MPI_CHECK(MPI_Comm_rank(world, &world_rank));
  STAS_ASSIGN_OR_RETURN(GroupLayout layout, GroupLayout::For(world_size, world_rank, sp, cfg));

  ProcessGroups groups;
  groups.layout_ = layout;
  // Every split is collective over `world`; the colors make the partitions described in the header.
  groups.group_ = MpiComm::Split(world, layout.group_index(), layout.rank_in_group());
  groups.sequence_ = MpiComm::Split(world, layout.group_index() * cfg + layout.cfg_rank(), layout.sequence_rank());
  groups.cfg_pair_ = MpiComm::Split(world, layout.group_index() * sp + layout.sequence_rank(), layout.cfg_rank());
  MpiComm node = MpiComm::SplitShared(world);
  groups.local_rank_ = node.rank();
  groups.local_size_ = node.size();
  return groups;
}

}  // namespace stas::parallel
