// Process groups: how an MPI world of N ranks is cut into rendering groups.
//
// A group of G = sp x cfg consecutive world ranks renders one job; N / G groups render in parallel.
// Inside a group, rank r belongs to CFG branch r / sp (0 = conditional, 1 = unconditional) and holds
// sequence shard r % sp. A rank therefore talks to two sub-groups:
//   sequence group: the sp ranks of its branch (Ulysses all-to-all, gathers, STAS max);
//   CFG pair:       the cfg ranks holding the same shard in the two branches (one exchange per step).
// Consecutive ranks share a branch, so on one node the sequence group uses neighbouring GPUs.
#pragma once

#include <mpi.h>

#include <string>

#include "common/status.h"
#include "models/dit.h"
#include "parallel/mpi_environment.h"

namespace stas::parallel {

// The arithmetic of the split; no MPI involved.
struct GroupLayout {
  int world_size = 1;
  int world_rank = 0;
  int sp = 1;   // sequence-parallel degree
  int cfg = 1;  // 2 when the CFG branches run on two halves of the group

  // Refuses sizes that do not tile the world, with a message that says what would.
  static Result<GroupLayout> For(int world_size, int world_rank, int sp, int cfg);

  int group_size() const { return sp * cfg; }
  int group_count() const { return world_size / group_size(); }
  int group_index() const { return world_rank / group_size(); }
  int rank_in_group() const { return world_rank % group_size(); }
  int sequence_rank() const { return rank_in_group() % sp; }
  int cfg_rank() const { return rank_in_group() / sp; }
  bool is_group_leader() const { return rank_in_group() == 0; }
  // The branch this rank computes when cfg == 2 (with cfg == 1 a rank computes both).
  models::CfgBranch branch() const { return cfg_rank() == 0 ? models::CfgBranch::kCond : models::CfgBranch::kUncond; }
  // "world rank 5 of 8: group 1 of 2, sequence rank 1 of 2, cond branch"
  std::string ToString() const;
};

// The MPI communicators of one rank's groups. Move-only; owns its communicators.
class ProcessGroups {
 public:
  // Collective over `world`: every rank must call it with the same sp and cfg. Invalid sizes give
  // the same error on every rank (so none is left waiting).
  static Result<ProcessGroups> Create(MPI_Comm world, int sp, int cfg);

  const GroupLayout& layout() const { return layout_; }
  MPI_Comm group() const { return group_.get(); }        // the G ranks of this rendering group
  MPI_Comm sequence() const { return sequence_.get(); }  // size sp
  MPI_Comm cfg_pair() const { return cfg_pair_.get(); }  // size cfg; rank = cfg_rank()
  // Rank and count of the processes on this node (for picking a GPU: device = local_rank % count).
  int local_rank() const { return local_rank_; }
  int local_size() const { return local_size_; }

 private:
  GroupLayout layout_;
  MpiComm group_;
  MpiComm sequence_;
  MpiComm cfg_pair_;
  int local_rank_ = 0;
  int local_size_ = 1;
};

}  // namespace stas::parallel
