#include "common/fixture.h"

#include <filesystem>
#include <sstream>

namespace fs = std::filesystem;

namespace stas {

Result<Fixture> Fixture::Open(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return NotFound("fixture folder not found: " + dir);
  Fixture f;
  f.dir_ = dir;
  STAS_ASSIGN_OR_RETURN(f.meta_, ReadJsonFile((fs::path(dir) / "meta.json").string()));
  Status st = CatchConfigErrors(dir + "/meta.json", [&] {
    if (!f.meta_.is_object()) throw std::runtime_error("not a JSON object");
    f.meta_.at("component").get<std::string>();
    f.outputs_ = f.meta_.at("outputs").get<std::vector<std::string>>();
    if (auto tol = f.meta_.find("tolerance"); tol != f.meta_.end()) {
      f.tolerance_.atol = tol->at("atol").get<double>();
      f.tolerance_.rtol = tol->at("rtol").get<double>();
    }
  });
  STAS_RETURN_IF_ERROR(st);
  const std::string weights = (fs::path(dir) / "weights.safetensors").string();
  if (fs::exists(weights, ec)) {
    STAS_ASSIGN_OR_RETURN(f.weights_, WeightStore::OpenFile(weights));
  }
  STAS_ASSIGN_OR_RETURN(SafetensorsFile io, SafetensorsFile::Open((fs::path(dir) / "io.safetensors").string()));
  f.io_ = std::move(io);
  return f;
}

std::string Fixture::component() const { return meta_.at("component").get<std::string>(); }

const Json& Fixture::config() const {
  static const Json kEmpty = Json::object();
  auto it = meta_.find("config");
  return it == meta_.end() ? kEmpty : *it;
}

Result<at::Tensor> Fixture::Io(const std::string& name) const {
  if (!io_) return NotFound("fixture has no io.safetensors");
  return io_->Get(name);
}

Comparison CompareTensors(const std::string& name, const at::Tensor& ours_in, const at::Tensor& ref_in,
                          Tolerance tol) {
  Comparison c;
  c.name = name;
  at::Tensor ours = ours_in.detach().to(at::kCPU, at::kDouble);
  at::Tensor ref = ref_in.detach().to(at::kCPU, at::kDouble);
  if (ours.sizes() != ref.sizes()) {
    std::ostringstream ss;
    ss << "shape " << ours.sizes() << " vs reference " << ref.sizes();
    c.shape_mismatch = true;
    c.detail = ss.str();
    c.max_abs_error = std::numeric_limits<double>::infinity();
    return c;
  }
  if (ours.numel() == 0) return c;
  if (!ours.isfinite().all().item<bool>() && ref.isfinite().all().item<bool>()) {
    c.non_finite = true;
    c.detail = "non-finite values where the reference is finite";
  }
  at::Tensor diff = (ours - ref).abs();
  diff = at::where(at::isnan(diff), at::full_like(diff, std::numeric_limits<double>::infinity()), diff);
  c.max_abs_error = diff.max().item<double>();
  c.worst_excess = (diff - (tol.atol + tol.rtol * ref.abs())).max().item<double>();
  return c;
}

}  // namespace stas
