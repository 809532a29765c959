//===- Interpreter.h - execute stlm IR with the reference kernels -*- C++ -*-===//
//
// The reference evaluator: runs the functions of a `stlm.model` op by op,
// every stlm op through its plain-loop kernel in Kernels.h, in fp32
// (T = float) or fp64 (T = double, for gradient checks). It is the oracle
// the compiled path is checked against, so it favours clarity: every value
// is a fresh, densely stored tensor.
//
// The interpreter owns the model's variables (every stlm.param and
// stlm.state); `stlm.assign` updates them. Bad data (ids out of range,
// wrong argument shapes) is reported as an error message, never a crash.
// Not thread-safe.
//
//===----------------------------------------------------------------------===//

#ifndef STLM_REFERENCE_INTERPRETER_H
#define STLM_REFERENCE_INTERPRETER_H

#include "dialects/STLM/IR/STLMOps.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace stlm::ref {

/// A runtime tensor: f32/f64 data (`f`), i32 data (`i`), i1 data (`b`) or
/// the bytes of an i8 tensor (`b`: a quantized weight), by `kind`,
/// row-major with `shape`.
template <typename T> struct Tensor {
  enum class Kind { Float, Int, Bool, Bytes };
  Kind kind = Kind::Float;
  std::vector<int64_t> shape;
  std::vector<T> f;
  std::vector<int32_t> i;
  std::vector<uint8_t> b;

  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape)
      n *= d;
    return n;
  }
  static Tensor floats(std::vector<int64_t> shape, std::vector<T> data = {});
  static Tensor ints(std::vector<int64_t> shape, std::vector<int32_t> data = {});
  static Tensor bools(std::vector<int64_t> shape, std::vector<uint8_t> data = {});
  static Tensor bytes(std::vector<int64_t> shape,
                      std::vector<uint8_t> data = {});
  /// A 0-d value.
  T scalar() const { return f.at(0); }
};

template <typename T> class Interpreter {
public:
  /// Interprets functions of `model`, which must be verified and stay alive.
  /// Variables start as: params per their init (zeros/ones; normal params
  /// must be set with setVariable), states at zero.
  explicit Interpreter(mlir::stlm::ModelOp model);

  /// Replaces variable `name` (a param or state) with `value`; false with
  /// `error` set on an unknown name or a shape/kind mismatch.
  bool setVariable(const std::string &name, Tensor<T> value,
                   std::string &error);
  const Tensor<T> *variable(const std::string &name) const;
  /// Names of the parameters, in declaration order.
  const std::vector<std::string> &paramNames() const { return params; }

  /// Runs `@fn(args)`. False with `error` set when the function is missing,
  /// an argument has the wrong shape, or the data is invalid.
  bool call(const std::string &fn, const std::vector<Tensor<T>> &args,
            std::vector<Tensor<T>> &results, std::string &error);

private:
  struct Frame;
  bool runFunction(mlir::func::FuncOp fn, const std::vector<Tensor<T>> &args,
                   std::vector<Tensor<T>> &results, std::string &error);
  bool runBlock(mlir::Block &block, Frame &frame, std::string &error);
  bool runOp(mlir::Operation &op, Frame &frame, std::string &error);

  mlir::stlm::ModelOp model;
  bool bf16; // matmul inputs rounded to bfloat16 (train.precision: bf16)
  std::map<std::string, Tensor<T>> variables;
  std::vector<std::string> params;
};

extern template class Interpreter<float>;
extern template class Interpreter<double>;

} // namespace stlm::ref

#endif // STLM_REFERENCE_INTERPRETER_H
