//===- Quantized.cpp - quantized checkpoints ------------------------------===//

#include "frontend/Quantized.h"

#include "frontend/Weights.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <set>

namespace stlm {

bool isQuantizedWeight(const std::string &name) {
  if (name == "embed.proj" || name == "head.proj")
    return true;
  size_t dot = name.rfind('.');
  if (dot == std::string::npos || name.find(".lora.") != std::string::npos)
    return false;
  std::string last = name.substr(dot + 1);
  for (const char *w : {"wq", "wk", "wv", "wo", "w1", "w2", "w3"})
    if (last == w)
      return true;
  return false;
}

std::string describe(const quant::Format &format) {
  return std::string(quant::schemeName(format.scheme)) + ", group " +
         std::to_string(format.group);
}

bool checkpointQuantization(const SafeTensorsFile &file,
                            std::optional<quant::Format> &format,
                            std::string &error) {
  format.reset();
  auto it = file.metadata().find(kQuantizationKey);
  if (it == file.metadata().end())
    return true;
  try {
    nlohmann::json j = nlohmann::json::parse(it->second);
    std::optional<quant::Scheme> scheme =
        j.at("scheme").is_string()
            ? quant::parseScheme(j.at("scheme").get<std::string>())
            : std::nullopt;
    if (!scheme || !j.at("group").is_number_integer() ||
        j.at("group").get<int64_t>() < 1)
      throw std::runtime_error("expected {\"scheme\": \"int8\" | \"int4\", "
                               "\"group\": N}");
    format = quant::Format{*scheme, j.at("group").get<int64_t>()};
    return true;
  } catch (const std::exception &e) {
    error = std::string("__metadata__.") + kQuantizationKey +
            " is not a quantization (" + e.what() + ")";
    return false;
  }
}

std::vector<std::string> checkQuantizedWeights(const ParamTable &table,
                                               const SafeTensorsFile &file,
                                               const quant::Format &format) {
  std::vector<std::string> problems;
  auto expect = [&](const std::string &name, DType dtype,
                    const std::vector<int64_t> &shape) {
    const TensorView *t = file.find(name);
    if (!t)
      problems.push_back("missing tensor '" + name + "'");
    else if (t->dtype != dtype || t->shape != shape)
      problems.push_back("'" + name + "' is " + dtypeName(t->dtype) +
                         " of shape " + shapeString(t->shape) + ", expected " +
                         dtypeName(dtype) + " " + shapeString(shape));
  };
  std::set<std::string> known;
  for (const ParamInfo &p : table.params) {
    known.insert(p.name);
    if (!isQuantizedWeight(p.name)) {
      expect(p.name, DType::F32, p.shape);
      continue;
    }
    int64_t out = p.shape[0], in = p.shape[1];
    if (std::string why = quant::groupProblem(format, in); !why.empty()) {
      problems.push_back("'" + p.name + "': " + why);
      continue;
    }
    bool int8 = format.scheme == quant::Scheme::Int8;
    expect(p.name, int8 ? DType::I8 : DType::U8, {out, int8 ? in : in / 2});
    expect(p.name + ".scale", DType::F32, {out, in / format.group});
    known.insert(p.name + ".scale");
  }
  for (const TensorView &t : file.tensors())
    if (!known.count(t.name))
      problems.push_back("unexpected tensor '" + t.name + "' " +
                         shapeString(t.shape));
  return problems;
}

bool quantizeCheckpoint(const std::string &inPath, const std::string &outPath,
                        const quant::Format &format, QuantizeReport &report,
                        std::string &error) {
  std::error_code ec;
  if (std::filesystem::equivalent(inPath, outPath, ec)) {
    error = "the output " + outPath +
            " is the checkpoint itself; write the quantized weights to "
            "another file";
    return false;
  }
  std::unique_ptr<SafeTensorsFile> file = SafeTensorsFile::open(inPath, error);
  if (!file)
    return false;
  std::optional<quant::Format> already;
  if (!checkpointQuantization(*file, already, error)) {
    error = inPath + ": " + error;
    return false;
  }
  if (already) {
    error = inPath + " is quantized already (" + describe(*already) +
            "); quantize the float checkpoint it was made from";
    return false;
  }
  std::optional<SpecResult> parsed = storedSpec(*file, inPath);
  if (!parsed) {
    error = inPath + ": no model spec in __metadata__." +
            std::string(kSpecKey) + " (is it an stlm checkpoint?)";
    return false;
  }
  if (!parsed->spec) {
    error = parsed->diagnostics.front().str();
    return false;
  }
  ParamTable table = buildParamTable(*parsed->spec);
  std::vector<std::string> problems = checkWeights(table, *file);
  for (const ParamInfo &p : table.params)
    if (isQuantizedWeight(p.name))
      if (std::string why = quant::groupProblem(format, p.shape[1]);
          !why.empty())
        problems.push_back("'" + p.name + "' cannot be quantized: " + why +
                           " (choose another --group)");
  if (!problems.empty()) {
    error = inPath + " cannot be quantized (" +
            std::to_string(problems.size()) + " problems):";
    for (const std::string &p : problems)
      error += "\n  " + p;
    return false;
  }

  report = QuantizeReport();
  std::vector<quant::QTensor> quantized;
  quantized.reserve(table.params.size());
  std::vector<TensorToWrite> tensors;
  for (const ParamInfo &p : table.params) {
    const TensorView *t = file->find(p.name);
    report.bytesIn += static_cast<int64_t>(t->size);
    if (!isQuantizedWeight(p.name)) {
      tensors.push_back({p.name, DType::F32, p.shape, t->data, t->size});
      report.bytesOut += static_cast<int64_t>(t->size);
      continue;
    }
    std::vector<float> w(t->numel());
    std::memcpy(w.data(), t->data, t->size);
    for (float x : w)
      if (!std::isfinite(x)) {
        error = inPath + ": '" + p.name + "' holds " + std::to_string(x) +
                "; only finite weights can be quantized";
        return false;
      }
    quantized.push_back(
        quant::quantize(w.data(), p.shape[0], p.shape[1], format));
    const quant::QTensor &q = quantized.back();
    std::vector<float> back = quant::dequantize(q);
    double err = 0, norm = 0;
    for (size_t i = 0; i < w.size(); ++i) {
      err += (double(back[i]) - w[i]) * (double(back[i]) - w[i]);
      norm += double(w[i]) * w[i];
    }
    double relative = norm > 0 ? std::sqrt(err / norm) : 0;
    if (relative >= report.worstError) {
      report.worstError = relative;
      report.worstTensor = p.name;
    }
    ++report.weights;
    tensors.push_back(
        {p.name, format.scheme == quant::Scheme::Int8 ? DType::I8 : DType::U8,
         q.dataShape(), q.data.data(), q.data.size()});
    tensors.push_back({p.name + ".scale",
                       DType::F32,
                       {q.out, q.groups()},
                       q.scales.data(),
                       q.scales.size() * sizeof(float)});
    report.bytesOut +=
        static_cast<int64_t>(q.data.size() + q.scales.size() * sizeof(float));
  }
  std::map<std::string, std::string> meta = file->metadata();
  meta[kQuantizationKey] = nlohmann::json{
      {"scheme", quant::schemeName(format.scheme)},
      {"group", format.group}}.dump();
  return writeSafeTensors(outPath, tensors, meta, error);
}

} // namespace stlm
