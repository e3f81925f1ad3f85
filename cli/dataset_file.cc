#include "cli/dataset_file.h"

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <set>

namespace stas::cli {

namespace {

enum class Format { kJsonl, kCsv, kText };

Result<Format> FormatOf(const std::string& path) {
  std::string ext = std::filesystem::path(path).extension().string();
  for (char& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (ext == ".jsonl" || ext == ".ndjson") return Format::kJsonl;
  if (ext == ".csv") return Format::kCsv;
  if (ext == ".txt") return Format::kText;
  return InvalidArgument("dataset " + path + ": unknown format '" + ext +
                         "' (use .jsonl with one JSON object per line, .csv with a header row, or .txt with one "
                         "prompt per line)");
}

const std::set<std::string>& IntegerFields() {
  static const std::set<std::string> k = {"height", "width", "frames", "steps", "fps", "priority"};
  return k;
}
const std::set<std::string>& NumberFields() {
  static const std::set<std::string> k = {"guidance", "shift"};
  return k;
}
const std::set<std::string>& StringFields() {
  static const std::set<std::string> k = {"prompt", "negative_prompt", "model", "output_name", "dataset"};
  return k;
}

// A CSV cell as the JSON value of its field.
Result<Json> CellValue(const std::string& field, const std::string& cell) {
  try {
    size_t used = 0;
    if (field == "seed") {
      if (!cell.empty() && cell[0] == '-') throw std::invalid_argument("negative");
      const unsigned long long v = std::stoull(cell, &used);
      if (used != cell.size()) throw std::invalid_argument("trailing characters");
      return Json(static_cast<uint64_t>(v));
    }
    if (IntegerFields().count(field)) {
      const long long v = std::stoll(cell, &used);
      if (used != cell.size() || v < INT32_MIN || v > INT32_MAX) throw std::invalid_argument("not an int");
      return Json(static_cast<int>(v));
    }
    if (NumberFields().count(field)) {
      const double v = std::stod(cell, &used);
      if (used != cell.size()) throw std::invalid_argument("trailing characters");
      return Json(v);
    }
  } catch (const std::exception&) {
    return InvalidArgument("column '" + field + "': '" + cell + "' is not a valid " +
                           (NumberFields().count(field) ? "number" : "non-negative integer"));
  }
  if (field == "stas") {
    auto parsed = ParseJson(cell, "column 'stas'");
    if (!parsed.ok()) return parsed.status();
    return *parsed;
  }
  return Json(cell);
}

Status CheckColumns(const std::vector<std::string>& header) {
  std::set<std::string> seen;
  for (const auto& name : header) {
    if (!seen.insert(name).second) return InvalidArgument("column '" + name + "' appears twice in the header");
    if (!StringFields().count(name) && !IntegerFields().count(name) && !NumberFields().count(name) &&
        name != "seed" && name != "stas")
      return InvalidArgument("unknown column '" + name +
                             "' (known: prompt, negative_prompt, seed, model, height, width, frames, steps, fps, "
                             "guidance, shift, stas, output_name, dataset, priority)");
  }
  if (!seen.count("prompt")) return InvalidArgument("the header has no 'prompt' column");
  return Status::Ok();
}

}  // namespace

Result<std::vector<std::string>> SplitCsvRecord(const std::string& record) {
  std::vector<std::string> cells(1);
  bool quoted = false;
  bool was_quoted = false;  // the current cell opened with a quote
  for (size_t i = 0; i < record.size(); ++i) {
    const char c = record[i];
    std::string& cell = cells.back();
    if (quoted) {
      if (c == '"') {
        if (i + 1 < record.size() && record[i + 1] == '"') {
          cell += '"';
          ++i;
        } else {
          quoted = false;
        }
      } else {
        cell += c;
      }
    } else if (c == ',') {
      cells.emplace_back();
      was_quoted = false;
    } else if (c == '"') {
      if (!cell.empty() || was_quoted) return InvalidArgument("a quote inside an unquoted cell (quote the whole cell)");
      quoted = true;
      was_quoted = true;
    } else {
      if (was_quoted) return InvalidArgument("characters after a closing quote");
      cell += c;
    }
  }
  if (quoted) return InvalidArgument("unterminated quoted cell");
  return cells;
}

Result<std::vector<DatasetRecord>> ReadDataset(const std::string& path, const Json& base,
                                               const std::string& dataset_name) {
  STAS_ASSIGN_OR_RETURN(Format format, FormatOf(path));
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFound("cannot open dataset " + path);
  if (!base.is_object()) return InvalidArgument("internal: the base spec must be a JSON object");

  std::string name = dataset_name;
  if (name.empty()) name = std::filesystem::path(path).stem().string();
  {
    jobspec::RenderSpec probe;
    probe.prompt = "x";
    probe.dataset = name;
    Status st = probe.Validate();
    if (!st.ok() || name.empty() || name[0] == '.')
      return InvalidArgument("dataset name '" + name + "' (from the file name) is not usable as a folder name; pass "
                             "--dataset-name");
  }

  std::vector<DatasetRecord> records;
  std::vector<std::string> header;
  std::string line;
  int line_no = 0;
  auto fail = [&](int at, const Status& st) {
    return InvalidArgument(path + ":" + std::to_string(at) + ": " + st.message());
  };
  while (std::getline(in, line)) {
    ++line_no;
    const int record_line = line_no;
    if (line_no == 1 && line.rfind("\xEF\xBB\xBF", 0) == 0) line.erase(0, 3);  // UTF-8 byte order mark
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (format == Format::kCsv) {
      // A quoted cell may span lines: read on while the quotes are unbalanced.
      auto quotes = [](const std::string& s) { return std::count(s.begin(), s.end(), '"'); };
      while (quotes(line) % 2 == 1) {
        std::string more;
        if (!std::getline(in, more)) return fail(record_line, InvalidArgument("unterminated quoted cell"));
        ++line_no;
        if (!more.empty() && more.back() == '\r') more.pop_back();
        line += "\n" + more;
      }
    }
    if (line.find_first_not_of(" \t") == std::string::npos) continue;

    Json fields = Json::object();
    switch (format) {
      case Format::kText:
        fields["prompt"] = line;
        break;
      case Format::kJsonl: {
        auto parsed = ParseJson(line, "line");
        if (!parsed.ok()) return fail(record_line, parsed.status());
        if (!parsed->is_object()) return fail(record_line, InvalidArgument("each line must be a JSON object"));
        fields = std::move(*parsed);
        break;
      }
      case Format::kCsv: {
        auto cells = SplitCsvRecord(line);
        if (!cells.ok()) return fail(record_line, cells.status());
        if (header.empty()) {
          header = *cells;
          for (auto& h : header) {
            const size_t a = h.find_first_not_of(" \t");
            const size_t b = h.find_last_not_of(" \t");
            h = a == std::string::npos ? "" : h.substr(a, b - a + 1);
          }
          Status st = CheckColumns(header);
          if (!st.ok()) return fail(record_line, st);
          continue;
        }
        if (cells->size() != header.size())
          return fail(record_line, InvalidArgument("has " + std::to_string(cells->size()) + " cells, the header has " +
                                                   std::to_string(header.size())));
        for (size_t i = 0; i < header.size(); ++i) {
          if ((*cells)[i].empty()) continue;
          auto value = CellValue(header[i], (*cells)[i]);
          if (!value.ok()) return fail(record_line, value.status());
          fields[header[i]] = std::move(*value);
        }
        break;
      }
    }
    Json merged = base;
    for (auto it = fields.begin(); it != fields.end(); ++it) merged[it.key()] = it.value();
    if (!merged.contains("dataset") || merged["dataset"].is_null() ||
        (merged["dataset"].is_string() && merged["dataset"].get<std::string>().empty()))
      merged["dataset"] = name;
    auto spec = jobspec::RenderSpec::FromJson(merged);
    if (!spec.ok()) return fail(record_line, spec.status());
    Status valid = spec->Validate();
    if (!valid.ok()) return fail(record_line, valid);
    records.push_back({record_line, std::move(*spec)});
  }
  if (format == Format::kCsv && header.empty()) return InvalidArgument(path + ": empty CSV file (no header row)");
  if (records.empty()) return InvalidArgument(path + ": the dataset has no prompts");
  return records;
}

}  // namespace stas::cli
