//===- Interpreter.cpp - execute stlm IR with the reference kernels -------===//

#include "reference/Interpreter.h"

#include "frontend/Params.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "reference/Kernels.h"
#include "support/Quantize.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/TypeSwitch.h"

#include <cmath>
#include <memory>

using namespace mlir;
using mlir::stlm::ModelOp;
namespace ir = mlir::stlm;

namespace stlm::ref {

template <typename T>
Tensor<T> Tensor<T>::floats(std::vector<int64_t> shape, std::vector<T> data) {
  Tensor t;
  t.kind = Kind::Float;
  t.shape = std::move(shape);
  t.f = data.empty() ? std::vector<T>(t.numel(), T(0)) : std::move(data);
  return t;
}
template <typename T>
Tensor<T> Tensor<T>::ints(std::vector<int64_t> shape,
                          std::vector<int32_t> data) {
  Tensor t;
  t.kind = Kind::Int;
  t.shape = std::move(shape);
  t.i = data.empty() ? std::vector<int32_t>(t.numel(), 0) : std::move(data);
  return t;
}
template <typename T>
Tensor<T> Tensor<T>::bools(std::vector<int64_t> shape,
                           std::vector<uint8_t> data) {
  Tensor t;
  t.kind = Kind::Bool;
  t.shape = std::move(shape);
  t.b = data.empty() ? std::vector<uint8_t>(t.numel(), 0) : std::move(data);
  return t;
}

template <typename T>
Tensor<T> Tensor<T>::bytes(std::vector<int64_t> shape,
                           std::vector<uint8_t> data) {
  Tensor t = bools(std::move(shape), std::move(data));
  t.kind = Kind::Bytes;
  return t;
}

namespace {

std::vector<int64_t> shapeOf(Type type) {
  auto t = llvm::cast<RankedTensorType>(type);
  return std::vector<int64_t>(t.getShape().begin(), t.getShape().end());
}

template <typename T> typename Tensor<T>::Kind kindOf(Type type) {
  Type e = llvm::cast<RankedTensorType>(type).getElementType();
  if (e.isInteger(1))
    return Tensor<T>::Kind::Bool;
  if (e.isInteger(32))
    return Tensor<T>::Kind::Int;
  if (e.isInteger(8))
    return Tensor<T>::Kind::Bytes;
  return Tensor<T>::Kind::Float;
}

template <typename T> Tensor<T> zerosOf(Type type) {
  std::vector<int64_t> shape = shapeOf(type);
  switch (kindOf<T>(type)) {
  case Tensor<T>::Kind::Bool:
    return Tensor<T>::bools(shape);
  case Tensor<T>::Kind::Int:
    return Tensor<T>::ints(shape);
  case Tensor<T>::Kind::Bytes:
    return Tensor<T>::bytes(shape);
  case Tensor<T>::Kind::Float:
    break;
  }
  return Tensor<T>::floats(shape);
}

/// Product of the dimensions before the last `keep`.
int64_t leading(const std::vector<int64_t> &shape, size_t keep) {
  int64_t n = 1;
  for (size_t i = 0; i + keep < shape.size(); ++i)
    n *= shape[i];
  return n;
}

PoolKind poolKind(ir::PoolKind k) {
  switch (k) {
  case ir::PoolKind::mean: return PoolKind::Mean;
  case ir::PoolKind::masked_mean: return PoolKind::MaskedMean;
  case ir::PoolKind::max: return PoolKind::Max;
  }
  return PoolKind::Mean;
}

/// ref::chunkTargets over a chunks tensor [B, C, L].
void chunkTargets(const std::vector<int32_t> &chunks,
                  const std::vector<int64_t> &shape, const int32_t *count,
                  bool next, bool maskPad, std::vector<int32_t> &targets,
                  std::vector<uint8_t> &counted) {
  int64_t B = shape[0], C = shape[1], L = shape[2];
  targets.assign(B * C * L, 0);
  counted.assign(B * C * L, 0);
  ::stlm::ref::chunkTargets(chunks.data(), B, C, L, count, next, maskPad,
                          targets.data(), counted.data());
}

} // namespace

template <typename T> struct Interpreter<T>::Frame {
  llvm::DenseMap<Value, Tensor<T>> values;
  const Tensor<T> &get(Value v) const { return values.find(v)->second; }
};

template <typename T>
Interpreter<T>::Interpreter(ModelOp model)
    : model(model), bf16(ir::hasBF16Matmuls(model)) {
  for (Operation &op : model.getBody().front()) {
    if (auto p = dyn_cast<ir::ParamOp>(op)) {
      Tensor<T> t = zerosOf<T>(p.getType());
      if (p.getInit() == ir::InitKind::ones)
        std::fill(t.f.begin(), t.f.end(), T(1));
      variables[p.getSymName().str()] = std::move(t);
      params.push_back(p.getSymName().str());
    } else if (auto s = dyn_cast<ir::StateOp>(op)) {
      variables[s.getSymName().str()] = zerosOf<T>(s.getType());
    }
  }
}

template <typename T>
bool Interpreter<T>::setVariable(const std::string &name, Tensor<T> value,
                                 std::string &error) {
  auto it = variables.find(name);
  if (it == variables.end()) {
    error = "'" + name + "' is not a parameter or state of the model";
    return false;
  }
  if (it->second.shape != value.shape || it->second.kind != value.kind ||
      value.numel() != static_cast<int64_t>(value.kind == Tensor<T>::Kind::Float
                                                ? value.f.size()
                                            : value.kind == Tensor<T>::Kind::Int
                                                ? value.i.size()
                                                : value.b.size())) {
    error = "'" + name + "' needs shape " + shapeString(it->second.shape) +
            ", got " + shapeString(value.shape);
    return false;
  }
  it->second = std::move(value);
  return true;
}

template <typename T>
const Tensor<T> *Interpreter<T>::variable(const std::string &name) const {
  auto it = variables.find(name);
  return it == variables.end() ? nullptr : &it->second;
}

template <typename T>
bool Interpreter<T>::call(const std::string &fn,
                          const std::vector<Tensor<T>> &args,
                          std::vector<Tensor<T>> &results,
                          std::string &error) {
  auto f = SymbolTable::lookupNearestSymbolFrom<func::FuncOp>(
      model.getBody().front().getParentOp(),
      StringAttr::get(model.getContext(), fn));
  if (!f || f.isExternal()) {
    error = "model '@" + model.getSymName().str() + "' has no function '@" +
            fn + "'";
    return false;
  }
  return runFunction(f, args, results, error);
}

template <typename T>
bool Interpreter<T>::runFunction(func::FuncOp fn,
                                 const std::vector<Tensor<T>> &args,
                                 std::vector<Tensor<T>> &results,
                                 std::string &error) {
  Block &entry = fn.getBody().front();
  if (args.size() != entry.getNumArguments()) {
    error = "@" + fn.getSymName().str() + " takes " +
            std::to_string(entry.getNumArguments()) + " arguments, got " +
            std::to_string(args.size());
    return false;
  }
  Frame frame;
  for (auto [i, arg] : llvm::enumerate(entry.getArguments())) {
    if (args[i].shape != shapeOf(arg.getType()) ||
        args[i].kind != kindOf<T>(arg.getType())) {
      error = "@" + fn.getSymName().str() + " argument " + std::to_string(i) +
              " must be " + shapeString(shapeOf(arg.getType())) +
              " of the declared element type, got " + shapeString(args[i].shape);
      return false;
    }
    frame.values[arg] = args[i];
  }
  if (!runBlock(entry, frame, error))
    return false;
  auto ret = cast<func::ReturnOp>(entry.getTerminator());
  results.clear();
  for (Value v : ret.getOperands())
    results.push_back(frame.get(v));
  return true;
}

template <typename T>
bool Interpreter<T>::runBlock(Block &block, Frame &frame, std::string &error) {
  for (Operation &op : block.without_terminator())
    if (!runOp(op, frame, error))
      return false;
  return true;
}

template <typename T>
bool Interpreter<T>::runOp(Operation &op, Frame &frame, std::string &error) {
  using TT = Tensor<T>;
  auto in = [&](Value v) -> const TT & { return frame.get(v); };
  auto set = [&](Value v, TT t) { frame.values[v] = std::move(t); };
  auto out = [&](Value v) { return TT::floats(shapeOf(v.getType())); };
  // A matmul operand: as is, or (train.precision: bf16) rounded to
  // bfloat16 in `copy`, as the native kernels round it.
  auto matmulInput = [&](const TT &t, std::vector<T> &copy) -> const T * {
    if (!bf16)
      return t.f.data();
    copy = t.f;
    roundBF16(copy.data(), static_cast<int64_t>(copy.size()));
    return copy.data();
  };
  std::vector<T> r0, r1, r2, r3; // rounded operands
  auto fail = [&](const std::string &msg) {
    error = op.getName().getStringRef().str() + ": " + msg;
    return false;
  };
  auto offsetOr = [&](Value offset, int64_t dflt) -> int64_t {
    return offset ? in(offset).i[0] : dflt;
  };
  // An attention's (or its gradient's) q and k, as given or (rope_theta)
  // rotated into copies at positions from 0 as stlm.rope rotates them, and
  // its queries, keys and head width.
  struct Attending {
    TT qr, kr; // the rotated copies, where made
    const TT *q = nullptr, *k = nullptr;
    int64_t queries = 0, keys = 0, hd = 0;
  };
  auto attending = [&](auto o, Attending &a) {
    const TT &q = in(o.getQ()), &k = in(o.getK());
    size_t n = q.shape.size();
    a.queries = q.shape[n - 2];
    a.keys = k.shape[n - 2];
    a.hd = q.shape[n - 1] / o.getHeads();
    a.q = &q;
    a.k = &k;
    std::optional<llvm::APFloat> theta = o.getRopeTheta();
    if (!theta)
      return;
    for (auto [x, copy] : {std::pair(&a.q, &a.qr), std::pair(&a.k, &a.kr)}) {
      const TT &from = **x;
      *copy = from;
      rope(from.f.data(), leading(from.shape, 2), from.shape[n - 2],
           from.shape[n - 1], a.hd, theta->convertToDouble(), 0,
           copy->f.data());
      *x = copy;
    }
  };
  // Cross-entropy over logits [P..., V] with per-position targets and
  // counted flags (empty = all counted).
  auto toBools = [](const std::vector<uint8_t> &flags) {
    std::unique_ptr<bool[]> c;
    if (!flags.empty()) {
      c.reset(new bool[flags.size()]);
      for (size_t k = 0; k < flags.size(); ++k)
        c[k] = flags[k];
    }
    return c;
  };
  auto crossEntropyOp = [&](Value logits, const std::vector<int32_t> &targets,
                            const std::vector<uint8_t> &counted,
                            Value result) {
    const TT &l = in(logits);
    int64_t V = l.shape.back(), P = l.numel() / V, bad = 0;
    std::unique_ptr<bool[]> c = toBools(counted);
    TT loss = TT::floats({});
    if (!crossEntropy(l.f.data(), targets.data(), c.get(), P, V,
                      loss.f.data(), &bad))
      return fail("target " + std::to_string(targets[bad]) +
                  " at position " + std::to_string(bad) +
                  " is outside [0, " + std::to_string(V) + ")");
    set(result, std::move(loss));
    return true;
  };
  auto crossEntropyGradOp = [&](Value logits,
                                const std::vector<int32_t> &targets,
                                const std::vector<uint8_t> &counted, T dloss,
                                Value result) {
    const TT &l = in(logits);
    int64_t V = l.shape.back(), P = l.numel() / V;
    std::unique_ptr<bool[]> c = toBools(counted);
    TT d = out(result);
    crossEntropyBackward(l.f.data(), targets.data(), c.get(), P, V, dloss,
                         d.f.data());
    set(result, std::move(d));
    return true;
  };

  return llvm::TypeSwitch<Operation *, bool>(&op)
      // Variables.
      .Case([&](ir::ParamRefOp o) {
        set(o.getResult(), variables.at(o.getName().str()));
        return true;
      })
      .Case([&](ir::StateRefOp o) {
        set(o.getResult(), variables.at(o.getName().str()));
        return true;
      })
      .Case([&](ir::AssignOp o) {
        variables[o.getName().str()] = in(o.getValue());
        return true;
      })
      // Structure.
      .Case([&](ir::RepeatOp o) {
        Block &body = o.getBody().front();
        TT hidden = in(o.getInit());
        // The body sees the enclosing values; its own values are dropped
        // after each layer.
        for (int64_t l = o.getLower(); l < o.getUpper(); ++l) {
          frame.values[o.getLayerIndex()] =
              TT::ints({}, {static_cast<int32_t>(l)});
          frame.values[o.getHidden()] = std::move(hidden);
          if (!runBlock(body, frame, error))
            return false;
          hidden = in(cast<ir::YieldOp>(body.getTerminator()).getValue());
          for (Operation &bop : body.without_terminator())
            for (Value r : bop.getResults())
              frame.values.erase(r);
        }
        frame.values.erase(o.getLayerIndex());
        frame.values.erase(o.getHidden());
        set(o.getResult(), std::move(hidden));
        return true;
      })
      .Case([&](ir::LayerParamRefOp o) {
        // The index of the run this reference belongs to.
        set(o.getResult(),
            variables.at(o.getNameForLayer(in(o.getLayer()).i[0])));
        return true;
      })
      .Case([&](func::CallOp o) {
        auto callee = SymbolTable::lookupNearestSymbolFrom<func::FuncOp>(
            o, o.getCalleeAttr());
        std::vector<TT> args, results;
        for (Value v : o.getOperands())
          args.push_back(in(v));
        if (!callee || callee.isExternal())
          return fail("'@" + o.getCallee().str() +
                      "' is not a function with a body in the model");
        if (!runFunction(callee, args, results, error))
          return false;
        for (auto [r, t] : llvm::zip(o.getResults(), results))
          set(r, std::move(t));
        return true;
      })
      .Case([&](arith::ConstantOp o) {
        auto attr = llvm::dyn_cast<DenseElementsAttr>(o.getValue());
        if (!attr)
          return fail("only dense tensor constants are supported");
        TT t = zerosOf<T>(o.getType());
        if (t.kind == TT::Kind::Float) {
          auto values = attr.getValues<APFloat>();
          for (int64_t k = 0; k < t.numel(); ++k)
            t.f[k] = static_cast<T>(values[k].convertToDouble());
        } else if (t.kind == TT::Kind::Int) {
          auto values = attr.getValues<APInt>();
          for (int64_t k = 0; k < t.numel(); ++k)
            t.i[k] = static_cast<int32_t>(values[k].getSExtValue());
        } else {
          auto values = attr.getValues<bool>();
          for (int64_t k = 0; k < t.numel(); ++k)
            t.b[k] = values[k];
        }
        set(o.getResult(), std::move(t));
        return true;
      })
      .Case([&](arith::AddIOp o) {
        TT t = in(o.getLhs());
        for (size_t k = 0; k < t.i.size(); ++k)
          t.i[k] += in(o.getRhs()).i[k];
        set(o.getResult(), std::move(t));
        return true;
      })
      .Case([&](arith::MulFOp o) {
        TT t = in(o.getLhs());
        for (size_t k = 0; k < t.f.size(); ++k)
          t.f[k] *= in(o.getRhs()).f[k];
        set(o.getResult(), std::move(t));
        return true;
      })
      // Embedders.
      .Case([&](ir::EmbedOp o) {
        const TT &table = in(o.getTable());
        const TT &ids = in(o.getIds());
        TT y = out(o.getResult());
        int64_t bad = 0;
        if (!embed(table.f.data(), table.shape[0], table.shape[1],
                   ids.i.data(), ids.numel(), y.f.data(), &bad))
          return fail("id " + std::to_string(ids.i[bad]) + " at position " +
                      std::to_string(bad) + " is outside [0, " +
                      std::to_string(table.shape[0]) + ")");
        set(o.getResult(), std::move(y));
        return true;
      })
      .Case([&](ir::EmbedGradOp o) {
        const TT &ids = in(o.getIds());
        TT d = out(o.getDtable());
        embedBackward(ids.i.data(), ids.numel(), d.shape[0], d.shape[1],
                      in(o.getDy()).f.data(), d.f.data());
        set(o.getDtable(), std::move(d));
        return true;
      })
      .Case([&](ir::ChunkOp o) {
        const TT &bytes = in(o.getBytes());
        std::vector<int64_t> cs = shapeOf(o.getChunks().getType());
        TT chunks = TT::ints(cs), count = TT::ints({cs[0]});
        ChunkMode mode = o.getMode() == ir::ChunkMode::fixed ? ChunkMode::Fixed
                         : o.getMode() == ir::ChunkMode::words
                             ? ChunkMode::Words
                             : ChunkMode::Given;
        if (!chunk(mode, bytes.i.data(), bytes.shape[0], bytes.shape[1],
                   o.getStride().value_or(0), cs[1], cs[2], chunks.i.data(),
                   count.i.data()))
          return fail("a byte is outside [0, 256] (256 ends a row)");
        set(o.getChunks(), std::move(chunks));
        set(o.getCount(), std::move(count));
        return true;
      })
      .Case([&](ir::PoolOp o) {
        const TT &x = in(o.getX());
        TT y = out(o.getResult());
        pool(poolKind(o.getKind()), x.f.data(),
             o.getIds() ? in(o.getIds()).i.data() : nullptr,
             leading(x.shape, 2), x.shape[x.shape.size() - 2], x.shape.back(),
             y.f.data());
        set(o.getResult(), std::move(y));
        return true;
      })
      .Case([&](ir::PoolGradOp o) {
        const TT &x = in(o.getX());
        TT dx = out(o.getDx());
        poolBackward(poolKind(o.getKind()), x.f.data(),
                     o.getIds() ? in(o.getIds()).i.data() : nullptr,
                     leading(x.shape, 2), x.shape[x.shape.size() - 2],
                     x.shape.back(), in(o.getDy()).f.data(), dx.f.data());
        set(o.getDx(), std::move(dx));
        return true;
      })
      // Core layers.
      .Case([&](ir::RMSNormOp o) {
        const TT &x = in(o.getX());
        TT y = out(o.getResult());
        rmsnorm(x.f.data(), in(o.getWeight()).f.data(), leading(x.shape, 1),
                x.shape.back(), o.getEps().convertToDouble(), y.f.data());
        set(o.getResult(), std::move(y));
        return true;
      })
      .Case([&](ir::RMSNormGradOp o) {
        const TT &x = in(o.getX());
        TT dx = out(o.getDx()), dg = out(o.getDweight());
        rmsnormBackward(x.f.data(), in(o.getWeight()).f.data(),
                        leading(x.shape, 1), x.shape.back(),
                        o.getEps().convertToDouble(), in(o.getDy()).f.data(),
                        dx.f.data(), dg.f.data());
        set(o.getDx(), std::move(dx));
        set(o.getDweight(), std::move(dg));
        return true;
      })
      .template Case<ir::LinearOp, ir::LogitsOp>([&](auto o) {
        const TT &x = in(o->getOperand(0));
        const TT &w = in(o->getOperand(1));
        TT y = out(o.getResult());
        linear(matmulInput(x, r0), matmulInput(w, r1), leading(x.shape, 1),
               x.shape.back(), w.shape[0], y.f.data());
        set(o.getResult(), std::move(y));
        return true;
      })
      .Case([&](ir::QLinearOp o) {
        // support/Quantize's arithmetic, row by row, in f32.
        const TT &x = in(o.getX());
        const TT &w = in(o.getWeight());
        const TT &s = in(o.getScale());
        quant::QTensor q;
        q.format = {*quant::parseScheme(o.getScheme().str()), o.getGroup()};
        q.out = w.shape[0];
        q.in = x.shape.back();
        q.data = w.b;
        q.scales.assign(s.f.begin(), s.f.end());
        TT y = out(o.getResult());
        std::vector<float> xr(q.in), yr(q.out);
        for (int64_t r = 0, rows = leading(x.shape, 1); r < rows; ++r) {
          std::copy_n(x.f.begin() + r * q.in, q.in, xr.begin());
          quant::matvec(q, xr.data(), yr.data());
          std::copy(yr.begin(), yr.end(), y.f.begin() + r * q.out);
        }
        set(o.getResult(), std::move(y));
        return true;
      })
      .Case([&](ir::LinearFusedOp o) {
        const TT &x = in(o.getX());
        const TT &w = in(o.getWeight());
        TT y = out(o.getResult());
        linear(matmulInput(x, r0), matmulInput(w, r1), leading(x.shape, 1),
               x.shape.back(), w.shape[0], y.f.data());
        if (o.getActivation() == "gelu") {
          auto h = y.f;
          gelu(h.data(), y.numel(), y.f.data());
        }
        if (o.getResidual()) {
          const TT &r = in(o.getResidual());
          for (int64_t k = 0; k < y.numel(); ++k)
            y.f[k] += r.f[k];
        }
        set(o.getResult(), std::move(y));
        return true;
      })
      .Case([&](ir::LinearGradOp o) {
        const TT &x = in(o.getX());
        const TT &w = in(o.getWeight());
        TT dx = out(o.getDx()), dw = out(o.getDweight());
        linearBackward(matmulInput(x, r0), matmulInput(w, r1),
                       leading(x.shape, 1), x.shape.back(), w.shape[0],
                       matmulInput(in(o.getDy()), r2), dx.f.data(),
                       dw.f.data());
        if (o.getAddend()) {
          const TT &a = in(o.getAddend());
          for (int64_t k = 0; k < dx.numel(); ++k)
            dx.f[k] += a.f[k];
        }
        if (o.getGeluInput()) {
          const TT &h = in(o.getGeluInput());
          TT dh = out(o.getDx());
          geluBackward(h.f.data(), dx.numel(), dx.f.data(), dh.f.data());
          dx = std::move(dh);
        }
        set(o.getDx(), std::move(dx));
        set(o.getDweight(), std::move(dw));
        return true;
      })
      .Case([&](ir::LowRankOp o) {
        const TT &x = in(o.getX()), &a = in(o.getA()), &b = in(o.getB());
        TT y = out(o.getResult());
        int64_t R = leading(x.shape, 1), In = x.shape.back(), K = a.shape[0],
                Out = b.shape[0];
        if (bf16) {
          // Two bf16 matmuls, as stlm-decompose compiles it: h = x·aᵀ
          // (rounded again as the second one's input), y = h·bᵀ.
          std::vector<T> h(R * K);
          linear(matmulInput(x, r0), matmulInput(a, r1), R, In, K, h.data());
          roundBF16(h.data(), R * K);
          linear(h.data(), matmulInput(b, r2), R, K, Out, y.f.data());
        } else {
          lowrank(x.f.data(), a.f.data(), b.f.data(), R, In, K, Out,
                  y.f.data());
        }
        set(o.getResult(), std::move(y));
        return true;
      })
      .Case([&](ir::LowRankMergeOp o) {
        const TT &w = in(o.getWeight()), &a = in(o.getA()), &b = in(o.getB());
        TT y = out(o.getResult());
        lowrankMerge(w.f.data(), matmulInput(a, r1), matmulInput(b, r2),
                     w.shape[0], w.shape[1], a.shape[0], y.f.data());
        set(o.getResult(), std::move(y));
        return true;
      })
      .Case([&](ir::LowRankMergeGradOp o) {
        const TT &g = in(o.getDmerged()), &a = in(o.getA()), &b = in(o.getB());
        TT da = out(o.getDa()), db = out(o.getDb());
        lowrankMergeBackward(matmulInput(g, r0), matmulInput(a, r1),
                             matmulInput(b, r2), g.shape[0], g.shape[1],
                             a.shape[0], da.f.data(), db.f.data());
        set(o.getDa(), std::move(da));
        set(o.getDb(), std::move(db));
        return true;
      })
      .Case([&](ir::LowRankGradOp o) {
        const TT &x = in(o.getX()), &a = in(o.getA()), &b = in(o.getB());
        TT dx = out(o.getDx()), da = out(o.getDa()), db = out(o.getDb());
        int64_t R = leading(x.shape, 1), In = x.shape.back(), K = a.shape[0],
                Out = b.shape[0];
        if (bf16) {
          // As stlm-decompose: h = x·aᵀ again; the gradient of h·bᵀ gives
          // dh and db, that of x·aᵀ gives dx and da; every operand rounded.
          const T *xr = matmulInput(x, r0), *ar = matmulInput(a, r1);
          std::vector<T> h(R * K), dh(R * K);
          linear(xr, ar, R, In, K, h.data());
          roundBF16(h.data(), R * K);
          linearBackward(h.data(), matmulInput(b, r2), R, K, Out,
                         matmulInput(in(o.getDy()), r3), dh.data(),
                         db.f.data());
          roundBF16(dh.data(), R * K);
          linearBackward(xr, ar, R, In, K, dh.data(), dx.f.data(),
                         da.f.data());
        } else {
          lowrankBackward(x.f.data(), a.f.data(), b.f.data(), R, In, K, Out,
                          in(o.getDy()).f.data(), dx.f.data(), da.f.data(),
                          db.f.data());
        }
        set(o.getDx(), std::move(dx));
        set(o.getDa(), std::move(da));
        set(o.getDb(), std::move(db));
        return true;
      })
      .Case([&](ir::RoPEOp o) {
        const TT &x = in(o.getX());
        TT y = out(o.getResult());
        size_t r = x.shape.size();
        rope(x.f.data(), leading(x.shape, 2), x.shape[r - 2], x.shape[r - 1],
             o.getHeadDim(), o.getTheta().convertToDouble(),
             offsetOr(o.getOffset(), 0), y.f.data());
        set(o.getResult(), std::move(y));
        return true;
      })
      .Case([&](ir::RoPEGradOp o) {
        const TT &dy = in(o.getDy());
        TT dx = out(o.getDx());
        size_t r = dy.shape.size();
        ropeBackward(dy.f.data(), leading(dy.shape, 2), dy.shape[r - 2],
                     dy.shape[r - 1], o.getHeadDim(),
                     o.getTheta().convertToDouble(),
                     offsetOr(o.getOffset(), 0), dx.f.data());
        set(o.getDx(), std::move(dx));
        return true;
      })
      .Case([&](ir::AttentionOp o) {
        Attending a;
        attending(o, a);
        TT y = out(o.getResult());
        attention(o.getMask() == ir::MaskKind::causal, a.q->f.data(),
                  a.k->f.data(), in(o.getV()).f.data(), leading(a.q->shape, 2),
                  a.queries, a.keys, o.getHeads(), o.getKvHeads(), a.hd,
                  offsetOr(o.getOffset(), a.keys - a.queries), y.f.data());
        set(o.getResult(), std::move(y));
        return true;
      })
      .Case([&](ir::AttentionGradOp o) {
        Attending a;
        attending(o, a);
        int64_t hd = a.hd;
        TT dq = out(o.getDq()), dk = out(o.getDk()), dv = out(o.getDv());
        attentionBackward(
            o.getMask() == ir::MaskKind::causal, a.q->f.data(), a.k->f.data(),
            in(o.getV()).f.data(), leading(a.q->shape, 2), a.queries, a.keys,
            o.getHeads(), o.getKvHeads(), hd,
            offsetOr(o.getOffset(), a.keys - a.queries), in(o.getDy()).f.data(),
            dq.f.data(), dk.f.data(), dv.f.data());
        // The gradients of the rotated q and k rotated back (rope_grad).
        if (auto theta = o.getRopeTheta())
          for (TT *g : {&dq, &dk}) {
            std::vector<T> back(g->f.size());
            size_t n = g->shape.size();
            ropeBackward(g->f.data(), leading(g->shape, 2), g->shape[n - 2],
                         g->shape[n - 1], hd, theta->convertToDouble(), 0,
                         back.data());
            g->f = std::move(back);
          }
        set(o.getDq(), std::move(dq));
        set(o.getDk(), std::move(dk));
        set(o.getDv(), std::move(dv));
        return true;
      })
      .Case([&](ir::SwiGLUOp o) {
        const TT &g = in(o.getGate());
        TT y = out(o.getResult());
        swiglu(g.f.data(), in(o.getUp()).f.data(), g.numel(), y.f.data());
        set(o.getResult(), std::move(y));
        return true;
      })
      .Case([&](ir::SwiGLUGradOp o) {
        const TT &g = in(o.getGate());
        TT dg = out(o.getDgate()), du = out(o.getDup());
        swigluBackward(g.f.data(), in(o.getUp()).f.data(), g.numel(),
                       in(o.getDy()).f.data(), dg.f.data(), du.f.data());
        set(o.getDgate(), std::move(dg));
        set(o.getDup(), std::move(du));
        return true;
      })
      .Case([&](ir::GELUOp o) {
        const TT &x = in(o.getX());
        TT y = out(o.getResult());
        gelu(x.f.data(), x.numel(), y.f.data());
        set(o.getResult(), std::move(y));
        return true;
      })
      .Case([&](ir::GELUGradOp o) {
        const TT &x = in(o.getX());
        TT dx = out(o.getDx());
        geluBackward(x.f.data(), x.numel(), in(o.getDy()).f.data(),
                     dx.f.data());
        set(o.getDx(), std::move(dx));
        return true;
      })
      .Case([&](ir::AddOp o) {
        TT y = in(o.getLhs());
        const TT &r = in(o.getRhs());
        int64_t n = r.numel();
        for (int64_t k = 0; k < y.numel(); ++k)
          y.f[k] += r.f[k % n];
        set(o.getResult(), std::move(y));
        return true;
      })
      .Case([&](ir::WriteRowsOp o) {
        TT y = in(o.getCache());
        const TT &rows = in(o.getRows());
        size_t r = y.shape.size();
        int64_t S = y.shape[r - 2], N = rows.shape[r - 2], W = y.shape[r - 1];
        int64_t at = in(o.getOffset()).i[0];
        if (at < 0 || at + N > S)
          return fail("rows " + std::to_string(at) + " to " +
                      std::to_string(at + N - 1) +
                      " are outside the cache of " + std::to_string(S) +
                      " rows");
        for (int64_t b = 0, lead = leading(y.shape, 2); b < lead; ++b)
          std::copy(rows.f.begin() + b * N * W,
                    rows.f.begin() + (b + 1) * N * W,
                    y.f.begin() + (b * S + at) * W);
        set(o.getResult(), std::move(y));
        return true;
      })
      .Case([&](ir::SumLeadingOp o) {
        const TT &x = in(o.getX());
        TT y = out(o.getResult());
        sumLeading(x.f.data(), x.numel() / y.numel(), y.numel(), y.f.data());
        set(o.getResult(), std::move(y));
        return true;
      })
      .template Case<ir::SplitSlotsOp, ir::MergeSlotsOp>([&](auto o) {
        TT y = in(o.getX());
        y.shape = shapeOf(o.getResult().getType());
        set(o.getResult(), std::move(y));
        return true;
      })
      // Objectives.
      .Case([&](ir::MaskTokensOp o) {
        const TT &ids = in(o.getIds());
        TT masked = TT::ints(ids.shape), mask = TT::bools(ids.shape);
        std::unique_ptr<bool[]> m(new bool[ids.numel()]);
        maskTokens(ids.i.data(), ids.numel(), in(o.getSeed()).i[0],
                   o.getProb().convertToDouble(), o.getMaskId(),
                   masked.i.data(), m.get());
        for (int64_t k = 0; k < ids.numel(); ++k)
          mask.b[k] = m[k];
        set(o.getMasked(), std::move(masked));
        set(o.getMask(), std::move(mask));
        return true;
      })
      .Case([&](ir::NextTokenLossOp o) {
        return crossEntropyOp(o.getLogits(), in(o.getTargets()).i, {},
                              o.getLoss());
      })
      .Case([&](ir::NextTokenLossGradOp o) {
        return crossEntropyGradOp(o.getLogits(), in(o.getTargets()).i, {},
                                  in(o.getDloss()).scalar(), o.getDlogits());
      })
      .Case([&](ir::MaskedNextTokenLossOp o) {
        return crossEntropyOp(o.getLogits(), in(o.getTargets()).i,
                              in(o.getMask()).b, o.getLoss());
      })
      .Case([&](ir::MaskedNextTokenLossGradOp o) {
        return crossEntropyGradOp(o.getLogits(), in(o.getTargets()).i,
                                  in(o.getMask()).b,
                                  in(o.getDloss()).scalar(), o.getDlogits());
      })
      .template Case<ir::ChunkBytesLossOp, ir::ReconstructionLossOp>(
          [&](auto o) {
            std::vector<int32_t> targets;
            std::vector<uint8_t> counted;
            const TT &c = in(o.getChunks());
            chunkTargets(c.i, c.shape,
                         o.getCount() ? in(o.getCount()).i.data() : nullptr,
                         isa<ir::ChunkBytesLossOp>(op), o.getMaskPad(), targets,
                         counted);
            return crossEntropyOp(o.getLogits(), targets, counted, o.getLoss());
          })
      .template Case<ir::ChunkBytesLossGradOp, ir::ReconstructionLossGradOp>(
          [&](auto o) {
            std::vector<int32_t> targets;
            std::vector<uint8_t> counted;
            const TT &c = in(o.getChunks());
            chunkTargets(c.i, c.shape,
                         o.getCount() ? in(o.getCount()).i.data() : nullptr,
                         isa<ir::ChunkBytesLossGradOp>(op), o.getMaskPad(),
                         targets, counted);
            return crossEntropyGradOp(o.getLogits(), targets, counted,
                                      in(o.getDloss()).scalar(),
                                      o.getDlogits());
          })
      .Case([&](ir::DistillLossOp o) {
        const TT &l = in(o.getLogits());
        TT loss = TT::floats({});
        int64_t bad = 0, V = l.shape.back();
        if (!distill(l.f.data(), in(o.getTeacher()).f.data(),
                     in(o.getTargets()).i.data(), l.numel() / V, V,
                     o.getTemperature().convertToDouble(),
                     o.getAlpha().convertToDouble(), loss.f.data(), &bad))
          return fail("target at position " + std::to_string(bad) +
                      " is outside [0, " + std::to_string(V) + ")");
        set(o.getLoss(), std::move(loss));
        return true;
      })
      .Case([&](ir::DistillLossGradOp o) {
        const TT &l = in(o.getLogits());
        TT d = out(o.getDlogits());
        int64_t V = l.shape.back();
        distillBackward(l.f.data(), in(o.getTeacher()).f.data(),
                        in(o.getTargets()).i.data(), l.numel() / V, V,
                        o.getTemperature().convertToDouble(),
                        o.getAlpha().convertToDouble(),
                        in(o.getDloss()).scalar(), d.f.data());
        set(o.getDlogits(), std::move(d));
        return true;
      })
      .Case([&](ir::WeightedSumOp o) {
        T sum = 0;
        for (auto [t, w] : llvm::zip(o.getTerms(), o.getWeights()))
          sum += static_cast<T>(llvm::cast<FloatAttr>(w).getValueAsDouble()) *
                 in(t).scalar();
        set(o.getLoss(), TT::floats({}, {sum}));
        return true;
      })
      // Training.
      .Case([&](ir::LRScheduleOp o) {
        set(o.getResult(),
            TT::floats({}, {static_cast<T>(o.valueAt(in(o.getStep()).i[0]))}));
        return true;
      })
      .Case([&](ir::ClipGradNormOp o) {
        double sq = 0;
        for (Value g : o.getGrads())
          for (T x : in(g).f)
            sq += static_cast<double>(x) * x;
        double norm = std::sqrt(sq), maxNorm = o.getMaxNorm().convertToDouble();
        double scale = maxNorm > 0 ? std::min(1.0, maxNorm / (norm + 1e-6)) : 1;
        for (auto [g, c] : llvm::zip(o.getGrads(), o.getClipped())) {
          TT t = in(g);
          for (T &x : t.f)
            x = static_cast<T>(x * scale);
          set(c, std::move(t));
        }
        set(o.getNorm(), TT::floats({}, {static_cast<T>(norm)}));
        return true;
      })
      .Case([&](ir::AdamWOp o) {
        TT p = in(o.getParam()), m = in(o.getM()), v = in(o.getV());
        adamw(p.f.data(), in(o.getGrad()).f.data(), m.f.data(), v.f.data(),
              p.numel(), static_cast<double>(in(o.getLr()).scalar()),
              in(o.getStep()).i[0], o.getBeta1().convertToDouble(),
              o.getBeta2().convertToDouble(), o.getEps().convertToDouble(),
              o.getWeightDecay().convertToDouble());
        set(o.getNewParam(), std::move(p));
        set(o.getNewM(), std::move(m));
        set(o.getNewV(), std::move(v));
        return true;
      })
      .Default([&](Operation *other) {
        return fail("the reference evaluator has no rule for this op");
      });
}

template struct Tensor<float>;
template struct Tensor<double>;
template class Interpreter<float>;
template class Interpreter<double>;

} // namespace stlm::ref
