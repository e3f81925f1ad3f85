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

at::Tensor UlyssesAttention::SelfAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                           double scale, int64_t valid_tokens) {
  STAS_CHECK(q.dim() == 4 && q.sizes() == k.sizes() && q.sizes() == v.sizes())
      << "SelfAttention expects q, k, v of one shape [B, L_local, H, Dh], got " << q.sizes() << ", " << k.sizes()
      << ", " << v.sizes();
  const int sp = size();
  const int64_t batch = q.size(0);
  const int64_t local_tokens = q.size(1);
  const int64_t heads = q.size(2);
  const int64_t head_dim = q.size(3);
  const int64_t padded_tokens = local_tokens * sp;
  STAS_CHECK(valid_tokens >= 1 && valid_tokens <= padded_tokens)
      << "valid_tokens " << valid_tokens << " outside [1, " << padded_tokens << "] (" << local_tokens
      << " tokens on each of " << sp << " ranks)";
  const Status heads_ok = CheckHeads(heads, sp);
  STAS_CHECK(heads_ok.ok()) << heads_ok.message();

  if (sp == 1) {
    // [B, L, H, Dh] -> [B, H, L, Dh]; keys past valid_tokens are padding.
    const at::Tensor qh = q.transpose(1, 2);
    const at::Tensor kh = k.transpose(1, 2).narrow(2, 0, valid_tokens);
    const at::Tensor vh = v.transpose(1, 2).narrow(2, 0, valid_tokens);
    return compat::ScaledDotProductAttention(qh, kh, vh, scale).transpose(1, 2).contiguous();
  }

  const int64_t group_heads = heads / sp;
  // Scatter heads, gather sequence, for q, k and v in one message:
  // [3, B, Ll, sp, Hs, Dh] -> [sp (destination), 3, B, Ll, Hs, Dh].
  const at::Tensor packed = at::stack({q, k, v})
                                .view({3, batch, local_tokens, sp, group_heads, head_dim})
                                .permute({3, 0, 1, 2, 4, 5})
                                .contiguous();
  // Received chunk j holds source rank j's tokens of this rank's heads:
  // [sp (source), 3, B, Ll, Hs, Dh] -> [3, B, Hs, sp * Ll, Dh], tokens in global order.
  const at::Tensor gathered = comm_.AllToAll(packed)
                                  .view({sp, 3, batch, local_tokens, group_heads, head_dim})
                                  .permute({1, 2, 4, 0, 3, 5})
                                  .reshape({3, batch, group_heads, padded_tokens, head_dim});
  const at::Tensor qh = gathered[0];
  const at::Tensor kh = gathered[1].narrow(2, 0, valid_tokens);
  const at::Tensor vh = gathered[2].narrow(2, 0, valid_tokens);
  const at::Tensor attended = compat::ScaledDotProductAttention(qh, kh, vh, scale);  // [B, Hs, Lpad, Dh]

  // Back: [B, Hs, sp, Ll, Dh] -> [sp (destination = token owner), B, Ll, Hs, Dh].
  const at::Tensor outgoing = attended.reshape({batch, group_heads, sp, local_tokens, head_dim})
                                  .permute({2, 0, 3, 1, 4})
                                  .contiguous();
  // Received chunk j holds head group j of this rank's tokens: -> [B, Ll, sp * Hs, Dh].
  return comm_.AllToAll(outgoing)
      .view({sp, batch, local_tokens, group_heads, head_dim})
      .permute({1, 2, 0, 3, 4})
      .reshape({batch, local_tokens, heads, head_dim});
}

at::Tensor UlyssesAttention::GatherSequence(const at::Tensor& x) {
  STAS_CHECK(x.dim() >= 2) << "GatherSequence expects [B, L_local, ...], got " << x.sizes();
  if (size() == 1) return x;
  // The communicator concatenates on dim 0, so the sequence travels in front.
  return comm_.AllGather(x.transpose(0, 1).contiguous()).transpose(0, 1).contiguous();
}

at::Tensor UlyssesAttention::AllReduceMax(const at::Tensor& x) { return comm_.AllReduce(x, ReduceOp::kMax); }

}  // namespace stas::parallel
