//===- VerifyShapes.cpp - invariants that span several ops ----------------===//

#include "passes/Passes.h"

namespace mlir::stlm {
#define GEN_PASS_DEF_VERIFYSHAPESPASS
#include "passes/Passes.h.inc"
} // namespace mlir::stlm

using namespace mlir;
using namespace mlir::stlm;

namespace {

/// The op that produced `v`, looking through nothing (rope/attention and
/// ids/embed are direct in every IR stlm builds).
template <typename Op> Op producer(Value v) { return v.getDefiningOp<Op>(); }

struct VerifyShapesPass
    : public mlir::stlm::impl::VerifyShapesPassBase<VerifyShapesPass> {
  void runOnOperation() override {
    bool ok = true;
    getOperation().walk([&](AttentionOp attn) {
      auto qType = llvm::cast<RankedTensorType>(attn.getQ().getType());
      int64_t headWidth = qType.getShape().back() / attn.getHeads();
      for (auto [what, v] : {std::pair<const char *, Value>{"queries",
                                                            attn.getQ()},
                             {"keys", attn.getK()}})
        if (auto rope = producer<RoPEOp>(v))
          if (rope.getHeadDim() != headWidth) {
            rope.emitOpError()
                << "rotates heads of width " << rope.getHeadDim()
                << ", but the attention using it as " << what
                << " has heads of width " << headWidth;
            ok = false;
          }
    });
    getOperation().walk([&](EmbedOp embed) {
      int64_t rows =
          llvm::cast<RankedTensorType>(embed.getTable().getType()).getShape()[0];
      if (auto mask = producer<MaskTokensOp>(embed.getIds()))
        if (mask.getMaskId() >= rows) {
          mask.emitOpError() << "mask_id " << mask.getMaskId()
                             << " is outside the table of " << rows
                             << " rows it is looked up in";
          ok = false;
        }
      if (producer<ChunkOp>(embed.getIds()) && rows < ChunkOp::kByteVocab) {
        embed.emitOpError() << "looks up chunk bytes (0-255 and pad 256) in a "
                               "table of "
                            << rows << " rows; it needs "
                            << ChunkOp::kByteVocab;
        ok = false;
      }
    });
    if (!ok)
      signalPassFailure();
  }
};

} // namespace
