#include "parallel/ulysses.h"

#include <sstream>

#include "common/check.h"
#include "common/torch_compat.h"

namespace stas::parallel {

Status UlyssesAttention::CheckHeads(int64_t heads, int sp) {
  if (sp < 1) return InvalidArgument("the sequence-parallel degree must be at least 1, got " + std::to_string(sp));
  if (heads < 1) return InvalidArgument("a model with " + std::to_string(heads) + " attention heads");
  if (heads % sp == 0) return Status::Ok();
  std::ostringstream m;
  m << heads << " attention heads do not split over " << sp << " ranks: use --sp in {";
  bool first = true;
  for (int64_t d = 1; d <= heads; ++d) {
    if (heads % d != 0) continue;
    m << (first ? "" : ",") << d;
    first = false;
  }
  m << "}";
  if (sp % 2 == 0 && heads % (sp / 2) == 0) m << " (or --sp " << sp / 2 << " with --cfg-parallel)";
  return InvalidArgument(m.str());
}

namespace {

// Shape checks shared by both attentions: q, k, v [B, L_local, H, Dh], heads divisible by sp, valid
// tokens within the padded sequence.
void CheckLocalQkv(const models::SequenceParallel::Qkv& t, int sp, int64_t valid_tokens) {
  STAS_CHECK(t.q.dim() == 4 && t.q.sizes() == t.k.sizes() && t.q.sizes() == t.v.sizes())
      << "sequence-parallel attention expects q, k, v of one shape [B, L_local, H, Dh], got " << t.q.sizes() << ", "
      << t.k.sizes() << ", " << t.v.sizes();
  const int64_t padded_tokens = t.q.size(1) * sp;
  STAS_CHECK(valid_tokens >= 1 && valid_tokens <= padded_tokens)
      << "valid_tokens " << valid_tokens << " outside [1, " << padded_tokens << "] (" << t.q.size(1)
      << " tokens on each of " << sp << " ranks)";
  const Status heads_ok = UlyssesAttention::CheckHeads(t.q.size(2), sp);
  STAS_CHECK(heads_ok.ok()) << heads_ok.message();
}

}  // namespace

UlyssesAttention::HeadShards UlyssesAttention::ScatterHeads(const Qkv& local, int64_t valid_tokens) {
  const int sp = size();
  const int64_t batch = local.q.size(0), local_tokens = local.q.size(1), heads = local.q.size(2),
                head_dim = local.q.size(3);
  if (sp == 1) {
    // [B, L, H, Dh] -> [B, H, L, Dh]; keys past valid_tokens are padding.
    return {local.q.transpose(1, 2), local.k.transpose(1, 2).narrow(2, 0, valid_tokens),
            local.v.transpose(1, 2).narrow(2, 0, valid_tokens)};
  }
  const int64_t group_heads = heads / sp;
  // Scatter heads, gather sequence, for q, k and v in one message:
  // [3, B, Ll, sp, Hs, Dh] -> [sp (destination), 3, B, Ll, Hs, Dh].
  const at::Tensor packed = at::stack({local.q, local.k, local.v})
                                .view({3, batch, local_tokens, sp, group_heads, head_dim})
                                .permute({3, 0, 1, 2, 4, 5})
                                .contiguous();
  // Received chunk j holds source rank j's tokens of this rank's heads:
  // [sp (source), 3, B, Ll, Hs, Dh] -> [3, B, Hs, sp * Ll, Dh], tokens in global order.
  const at::Tensor gathered = comm_.AllToAll(packed)
                                  .view({sp, 3, batch, local_tokens, group_heads, head_dim})
                                  .permute({1, 2, 4, 0, 3, 5})
                                  .reshape({3, batch, group_heads, sp * local_tokens, head_dim});
  return {gathered[0], gathered[1].narrow(2, 0, valid_tokens), gathered[2].narrow(2, 0, valid_tokens)};
}

at::Tensor UlyssesAttention::GatherHeads(const at::Tensor& attended, int64_t local_tokens) {
  const int sp = size();
  if (sp == 1) return attended.transpose(1, 2).contiguous();
  const int64_t batch = attended.size(0), group_heads = attended.size(1), head_dim = attended.size(3);
  // Back: [B, Hs, sp, Ll, Dh] -> [sp (destination = token owner), B, Ll, Hs, Dh].
  const at::Tensor outgoing = attended.reshape({batch, group_heads, sp, local_tokens, head_dim})
                                  .permute({2, 0, 3, 1, 4})
                                  .contiguous();
  // Received chunk j holds head group j of this rank's tokens: -> [B, Ll, sp * Hs, Dh].
  return comm_.AllToAll(outgoing)
      .view({sp, batch, local_tokens, group_heads, head_dim})
      .permute({1, 2, 0, 3, 4})
      .reshape({batch, local_tokens, sp * group_heads, head_dim});
}

at::Tensor UlyssesAttention::SelfAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                           double scale, int64_t valid_tokens) {
  const Qkv local{q, k, v};
  CheckLocalQkv(local, size(), valid_tokens);
  const HeadShards h = ScatterHeads(local, valid_tokens);
  return GatherHeads(compat::ScaledDotProductAttention(h.q, h.k, h.v, scale), q.size(1));
}

models::SequenceParallel::JointOutput UlyssesAttention::JointSelfAttention(const Qkv& prefix, const Qkv& local,
                                                                           double scale, int64_t valid_tokens) {
  const int sp = size();
  CheckLocalQkv(local, sp, valid_tokens);
  STAS_CHECK(prefix.q.dim() == 4 && prefix.q.sizes() == prefix.k.sizes() && prefix.q.sizes() == prefix.v.sizes() &&
             prefix.q.size(0) == local.q.size(0) && prefix.q.size(2) == local.q.size(2) &&
             prefix.q.size(3) == local.q.size(3))
      << "JointSelfAttention: the prefix q, k, v must be [B, L_prefix, H, Dh] like the local ones, got "
      << prefix.q.sizes() << " and " << local.q.sizes();
  const int64_t prefix_tokens = prefix.q.size(1);
  const int64_t group_heads = local.q.size(2) / sp;
  const HeadShards h = ScatterHeads(local, valid_tokens);
  // The prefix is whole on every rank: each rank takes its own head group, no communication.
  auto heads_of = [&](const at::Tensor& x) { return x.narrow(2, rank() * group_heads, group_heads).transpose(1, 2); };
  const at::Tensor attended =
      compat::ScaledDotProductAttention(at::cat({heads_of(prefix.q), h.q}, 2), at::cat({heads_of(prefix.k), h.k}, 2),
                                        at::cat({heads_of(prefix.v), h.v}, 2), scale);  // [B, Hs, Lp + Lpad, Dh]
  JointOutput out;
  out.local = GatherHeads(attended.narrow(2, prefix_tokens, attended.size(2) - prefix_tokens), local.q.size(1));
  // The prefix's head groups from every rank: [sp, B, Hs, Lp, Dh] -> [B, Lp, H, Dh].
  const at::Tensor prefix_heads = attended.narrow(2, 0, prefix_tokens).contiguous();
  const int64_t batch = prefix.q.size(0), head_dim = prefix.q.size(3);
  const at::Tensor all = sp == 1 ? prefix_heads.unsqueeze(0)
                                 : comm_.AllGather(prefix_heads).view({sp, batch, group_heads, prefix_tokens, head_dim});
  out.prefix = all.permute({1, 3, 0, 2, 4}).reshape({batch, prefix_tokens, sp * group_heads, head_dim});
  return out;
}

at::Tensor UlyssesAttention::GatherSequence(const at::Tensor& x) {
  STAS_CHECK(x.dim() >= 2) << "GatherSequence expects [B, L_local, ...], got " << x.sizes();
  if (size() == 1) return x;
  // The communicator concatenates on dim 0, so the sequence travels in front.
  return comm_.AllGather(x.transpose(0, 1).contiguous()).transpose(0, 1).contiguous();
}

at::Tensor UlyssesAttention::AllReduceMax(const at::Tensor& x) { return comm_.AllReduce(x, ReduceOp::kMax); }

}  // namespace stas::parallel
