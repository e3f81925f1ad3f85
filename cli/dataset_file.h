// Prompt datasets for `stas submit --dataset FILE`.
//
// Formats, chosen by the file's extension:
//   .jsonl / .ndjson  one JSON object per line with RenderSpec fields ("prompt", "seed", "steps", ...)
//   .csv              a header row naming RenderSpec fields (prompt,seed,...), then one row per video;
//                     RFC 4180 quoting ("a, b" and "" for a quote); an empty cell leaves the field unset
//   .txt              one prompt per line
// Blank lines are skipped everywhere. Each record's fields override the command line's render flags
// (the `base` spec below); the dataset name defaults to the file's stem, so a dataset's videos land in
// one folder. Every record is checked before anything is submitted: one bad line fails the whole file
// with "FILE:LINE: <what is wrong>", and nothing is queued.
#pragma once

#include <string>
#include <vector>

#include "common/json.h"
#include "common/status.h"
#include "jobspec/render_spec.h"

namespace stas::cli {

struct DatasetRecord {
  int line = 0;  // 1-based line of the record in the file
  jobspec::RenderSpec spec;
};

// Reads and validates every record. `base` is the RenderSpec JSON of the command line's flags;
// `dataset_name` overrides the stem-derived name when not empty (records naming their own dataset
// keep it). InvalidArgument for malformed files, NotFound when the file is missing.
Result<std::vector<DatasetRecord>> ReadDataset(const std::string& path, const Json& base,
                                               const std::string& dataset_name = "");

// Splits one CSV line that holds a complete record (quotes balanced) into cells.
Result<std::vector<std::string>> SplitCsvRecord(const std::string& record);

}  // namespace stas::cli
