//===- Weights.cpp - initial weights and checkpoint checks ----------------===//

#include "frontend/Weights.h"

#include <cmath>
#include <set>
#include <sstream>

namespace stlm {

std::vector<InitTensor> initWeights(const ParamTable &table, uint64_t seed) {
  std::vector<InitTensor> out;
  out.reserve(table.params.size());
  for (const ParamInfo &p : table.params) {
    InitTensor t;
    t.param = &p;
    size_t n = static_cast<size_t>(p.numel());
    switch (p.init) {
    case InitKind::Zeros:
      t.values.assign(n, 0.0f);
      break;
    case InitKind::Ones:
      t.values.assign(n, 1.0f);
      break;
    case InitKind::Normal: {
      t.values.resize(n);
      uint64_t key = splitmix64(seed ^ fnv1a64(p.name));
      auto uniform = [&](uint64_t k) {
        return static_cast<double>(splitmix64(key + k) >> 11) * 0x1.0p-53;
      };
      const double twoPi = 6.283185307179586476925286766559;
      for (size_t i = 0; i < n; i += 2) {
        double r = std::sqrt(-2.0 * std::log(1.0 - uniform(i)));
        double a = twoPi * uniform(i + 1);
        t.values[i] = static_cast<float>(p.std * r * std::cos(a));
        if (i + 1 < n)
          t.values[i + 1] = static_cast<float>(p.std * r * std::sin(a));
      }
      break;
    }
    }
    out.push_back(std::move(t));
  }
  return out;
}

std::map<std::string, std::string> checkpointMetadata(const ModelSpec &spec) {
  return {{kSpecKey, specToJson(spec)}, {kFormatKey, kFormatVersion}};
}

bool writeInitialWeights(const ModelSpec &spec, uint64_t seed,
                         const std::string &path, std::string &error) {
  ParamTable table = buildParamTable(spec);
  std::vector<InitTensor> weights = initWeights(table, seed);
  std::vector<TensorToWrite> tensors;
  tensors.reserve(weights.size());
  for (const InitTensor &w : weights)
    tensors.push_back({w.param->name, DType::F32, w.param->shape,
                       w.values.data(), w.values.size() * sizeof(float)});
  return writeSafeTensors(path, tensors, checkpointMetadata(spec), error);
}

std::optional<SpecResult> storedSpec(const SafeTensorsFile &file,
                                     const std::string &path) {
  auto it = file.metadata().find(kSpecKey);
  if (it == file.metadata().end())
    return std::nullopt;
  std::string origin = path + ": __metadata__." + std::string(kSpecKey);
  SpecResult result = parseSpecJson(it->second, origin);
  resolveTeachers(result, origin); // a spec stored without teacher_spec
  return result;
}

std::vector<std::string> checkWeights(const ParamTable &table,
                                      const SafeTensorsFile &file) {
  std::vector<std::string> problems;
  auto check = [&](const std::string &name, const ParamInfo &p,
                   const TensorView &t) {
    if (t.dtype != DType::F32)
      problems.push_back("'" + name + "' has dtype " + dtypeName(t.dtype) +
                         ", expected F32");
    if (t.shape != p.shape)
      problems.push_back("'" + name + "' has shape " + shapeString(t.shape) +
                         ", expected " + shapeString(p.shape));
  };
  for (const ParamInfo &p : table.params) {
    if (const TensorView *t = file.find(p.name))
      check(p.name, p, *t);
    else
      problems.push_back("missing tensor '" + p.name + "' " +
                         shapeString(p.shape));
  }
  // Optimizer state `opt.m.<param>` / `opt.v.<param>` mirrors its parameter.
  auto optimizerStateOf = [&](const std::string &name) -> const ParamInfo * {
    for (const std::string prefix : {"opt.m.", "opt.v."})
      if (name.compare(0, prefix.size(), prefix) == 0)
        return table.find(name.substr(prefix.size()));
    return nullptr;
  };
  for (const TensorView &t : file.tensors()) {
    if (table.find(t.name))
      continue;
    if (const ParamInfo *p = optimizerStateOf(t.name))
      check(t.name, *p, t);
    else
      problems.push_back("unexpected tensor '" + t.name + "' " +
                         shapeString(t.shape) +
                         " (not a parameter of the spec)");
  }
  return problems;
}

} // namespace stlm
