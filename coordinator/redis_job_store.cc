#include "coordinator/redis_job_store.h"

#include <algorithm>
#include <cstdlib>

#include "common/json.h"
#include "common/log.h"
#include "common/text.h"
#include "coordinator/parallel_for.h"
#include "jobspec/render_spec.h"

namespace stas::coordinator {

namespace {

// Hash field names as stored: one or two letters each, to keep a queued job small (a hash's field
// names are stored per job). Empty strings and zero numbers are not stored at all.
const std::map<std::string, std::string>& ShortNames() {
  static const std::map<std::string, std::string> k = {
      {"state", "s"},        {"spec", "j"},       {"model", "m"},        {"dataset", "d"},
      {"priority", "p"},     {"attempts", "a"},   {"step", "t"},         {"steps", "n"},
      {"stage", "g"},        {"worker", "w"},     {"lease", "l"},        {"error", "e"},
      {"output", "o"},       {"manifest", "f"},   {"timings", "i"},      {"api", "x"},
      {"created_ms", "c"},   {"started_ms", "b"}, {"finished_ms", "z"},  {"updated_ms", "u"},
      {"heartbeat_ms", "h"}, {"retry_at_ms", "r"}};
  return k;
}
const std::map<std::string, std::string>& LongNames() {
  static const std::map<std::string, std::string> k = [] {
    std::map<std::string, std::string> m;
    for (const auto& [l, s] : ShortNames()) m[s] = l;
    return m;
  }();
  return k;
}
bool IsNumericField(const std::string& name) {
  return name == "priority" || name == "attempts" || name == "step" || name == "steps" ||
         (name.size() > 3 && name.compare(name.size() - 3, 3, "_ms") == 0);
}

// Transitions (see job_store.h), each atomic. ARGV[1] = key prefix, ARGV[2] = a JSON array of
// transitions with short field names (numbers travel as strings so 13-digit millisecond times never
// meet Lua's number formatting), ARGV[3] = '1' for brief results.
// Returns one result per transition: full {applied, before (flat HGETALL), after, id}, brief
// {applied, state before ('' = absent)}.
constexpr const char* kTransitionScript = R"lua(
local p = ARGV[1]
local ts = cjson.decode(ARGV[2])
local brief = ARGV[3] == '1'
local function qname(m)
  local path = string.gsub(m, '/+$', '')
  local base = string.match(path, '[^/]*$') or ''
  if base == '' then return m end
  return base
end
local function apply(t, id)
  local jk = p .. 'job:' .. id
  local lk = p .. 'lease:' .. id
  local before = redis.call('HGETALL', jk)
  local cur = {}
  for i = 1, #before, 2 do cur[before[i]] = before[i + 1] end
  local exists = #before > 0
  local ok = true
  if t.require_absent then
    ok = not exists
  elseif not exists then
    ok = false
  else
    if t.from then
      ok = false
      for _, s in ipairs(t.from) do if cur['s'] == s then ok = true end end
    end
    if ok and t.lease_is ~= nil and (cur['l'] or '') ~= t.lease_is then ok = false end
    if ok and t.lease_key_expired and redis.call('EXISTS', lk) == 1 then ok = false end
  end
  if not ok then return 0, before, before, cur['s'] end
  if t.set then
    local args = {}
    for k, v in pairs(t.set) do args[#args + 1] = k; args[#args + 1] = v end
    if #args > 0 then redis.call('HSET', jk, unpack(args)) end
  end
  if t.del and #t.del > 0 then redis.call('HDEL', jk, unpack(t.del)) end
  if t.incr then for k, v in pairs(t.incr) do redis.call('HINCRBY', jk, k, v) end end
  redis.call('HSET', jk, 'u', t.now_ms)
  local created = redis.call('HGET', jk, 'c') or '0'
  if not exists then redis.call('ZADD', p .. 'all', created, id) end
  local old_state = cur['s']
  local new_state = old_state
  local q = qname(redis.call('HGET', jk, 'm') or '')
  local rk = p .. 'ready:' .. q
  if t.to then
    new_state = t.to
    if old_state and old_state ~= t.to then redis.call('ZREM', p .. 'state:' .. old_state, id) end
    redis.call('HSET', jk, 's', t.to)
    if old_state ~= t.to then redis.call('ZADD', p .. 'state:' .. t.to, created, id) end
    if t.to ~= 'queued' then
      redis.call('ZREM', p .. 'delayed', id)
      redis.call('ZREM', rk, id)
    end
  end
  if t.lease_op == 'set' then
    redis.call('SET', lk, t.lease_token, 'PX', t.lease_ttl_ms)
  elseif t.lease_op == 'delete' then
    redis.call('DEL', lk)
  end
  if t.delay_until_ms then
    redis.call('ZADD', p .. 'delayed', t.delay_until_ms, id)
    redis.call('ZREM', rk, id)
  end
  if t.enqueue then
    redis.call('ZREM', p .. 'delayed', id)
    local seq = redis.call('INCR', p .. 'seq') % 4294967296
    local prio = tonumber(redis.call('HGET', jk, 'p') or '0') or 0
    prio = math.max(-1000000, math.min(1000000, prio))
    redis.call('ZADD', rk, string.format('%.0f', -prio * 4294967296 + seq), id)
    redis.call('SADD', p .. 'queues', q)
  end
  if t.dead_letter_reason then
    redis.call('XADD', p .. 'dead', 'MAXLEN', '~', '10000', '*', 'job', id, 'reason', t.dead_letter_reason,
               'attempts', redis.call('HGET', jk, 'a') or '0', 'at', t.now_ms)
  end
  if t.stats then for k, v in pairs(t.stats) do redis.call('HINCRBY', p .. 'stats', k, v) end end
  local old_ds = cur['d'] or ''
  local new_ds = redis.call('HGET', jk, 'd') or ''
  if old_ds ~= new_ds then
    if old_ds ~= '' then redis.call('ZREM', p .. 'dataset:' .. old_ds, id) end
    if new_ds ~= '' then
      redis.call('ZADD', p .. 'dataset:' .. new_ds, created, id)
      redis.call('ZADD', p .. 'datasets', 'NX', created, new_ds)
    end
  end
  if old_ds ~= new_ds or old_state ~= new_state then
    if old_ds ~= '' and old_state then redis.call('ZREM', p .. 'dstate:' .. old_state .. ':' .. old_ds, id) end
    if new_ds ~= '' and new_state then redis.call('ZADD', p .. 'dstate:' .. new_state .. ':' .. new_ds, created, id) end
  end
  if brief then return 1, before, before, old_state end
  return 1, before, redis.call('HGETALL', jk), old_state
end
local out = {}
for i, t in ipairs(ts) do
  local applied, before, after, state, id = 0, {}, {}, nil, t.id
  if t.pop then
    id = ''
    local key = p .. 'ready:' .. t.pop
    for n = 1, 1000 do
      local head = redis.call('ZPOPMIN', key)
      if #head == 0 then break end
      applied, before, after, state = apply(t, head[1])
      if applied == 1 then id = head[1] break end
      before, after = {}, {}
    end
  else
    applied, before, after, state = apply(t, id)
  end
  if brief then out[i] = {applied, state or ''} else out[i] = {applied, before, after, id} end
end
return out
)lua";

// Batch creation (JobStore::CreateQueued), leaner than one transition per job: arguments travel flat
// (no JSON to decode), the hash is written with one HSET, and each index gets one ZADD per script call
// for all its new members. ARGV[1] = key prefix, ARGV[2] = now (ms), then per record: id, ready-queue
// name, clamped priority, dataset, field count n, then n field/value pairs (short names). Returns per
// record '' when created, else the existing job's state ('?' for a hash without one).
constexpr const char* kCreateScript = R"lua(
local p = ARGV[1]
local now = ARGV[2]
local out = {}
local zadds = {}
local function zadd(key, member)
  local t = zadds[key]
  if not t then t = {} zadds[key] = t end
  t[#t + 1] = now
  t[#t + 1] = member
end
local ready, queues, datasets = {}, {}, {}
local i = 3
while i <= #ARGV do
  local id, q, prio, ds, n = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), ARGV[i + 3], tonumber(ARGV[i + 4])
  local jk = p .. 'job:' .. id
  if redis.call('EXISTS', jk) == 1 then
    out[#out + 1] = redis.call('HGET', jk, 's') or '?'
  else
    local args = {'s', 'queued', 'c', now, 'u', now}
    for k = i + 5, i + 4 + 2 * n do args[#args + 1] = ARGV[k] end
    redis.call('HSET', jk, unpack(args))
    zadd(p .. 'all', id)
    zadd(p .. 'state:queued', id)
    if ds ~= '' then
      zadd(p .. 'dataset:' .. ds, id)
      zadd(p .. 'dstate:queued:' .. ds, id)
      datasets[ds] = true
    end
    ready[#ready + 1] = {p .. 'ready:' .. q, prio, id}
    queues[q] = true
    out[#out + 1] = ''
  end
  i = i + 5 + 2 * n
end
if #ready > 0 then
  local first = redis.call('INCRBY', p .. 'seq', #ready) - #ready
  for k, r in ipairs(ready) do
    local t = zadds[r[1]]
    if not t then t = {} zadds[r[1]] = t end
    t[#t + 1] = string.format('%.0f', -r[2] * 4294967296 + (first + k) % 4294967296)
    t[#t + 1] = r[3]
  end
  for q in pairs(queues) do redis.call('SADD', p .. 'queues', q) end
  for ds in pairs(datasets) do redis.call('ZADD', p .. 'datasets', 'NX', now, ds) end
  redis.call('HINCRBY', p .. 'stats', 'submitted', #ready)
end
for key, t in pairs(zadds) do
  for a = 1, #t, 4000 do redis.call('ZADD', key, unpack(t, a, math.min(#t, a + 3999))) end
end
return out
)lua";

// Removes a job and every trace of it. ARGV[1] = prefix, ARGV[2] = id. Returns 1 when it existed.
constexpr const char* kDeleteScript = R"lua(
local p = ARGV[1]
local id = ARGV[2]
local jk = p .. 'job:' .. id
if redis.call('EXISTS', jk) == 0 then return 0 end
local state = redis.call('HGET', jk, 's')
local dataset = redis.call('HGET', jk, 'd')
local m = redis.call('HGET', jk, 'm') or ''
local path = string.gsub(m, '/+$', '')
local q = string.match(path, '[^/]*$') or ''
if q == '' then q = m end
if state then redis.call('ZREM', p .. 'state:' .. state, id) end
if dataset and dataset ~= '' then
  redis.call('ZREM', p .. 'dataset:' .. dataset, id)
  if state then redis.call('ZREM', p .. 'dstate:' .. state .. ':' .. dataset, id) end
end
redis.call('ZREM', p .. 'ready:' .. q, id)
redis.call('ZREM', p .. 'all', id)
redis.call('ZREM', p .. 'delayed', id)
redis.call('DEL', p .. 'lease:' .. id)
redis.call('DEL', jk)
return 1
)lua";

// Re-enqueues queued jobs found in no ready queue and not delayed. ARGV[1] = prefix. Returns the count.
constexpr const char* kRepairScript = R"lua(
local p = ARGV[1]
local n = 0
for _, id in ipairs(redis.call('ZRANGE', p .. 'state:queued', 0, -1)) do
  if not redis.call('ZSCORE', p .. 'delayed', id) then
    local jk = p .. 'job:' .. id
    local m = redis.call('HGET', jk, 'm') or ''
    local path = string.gsub(m, '/+$', '')
    local q = string.match(path, '[^/]*$') or ''
    if q == '' then q = m end
    if not redis.call('ZSCORE', p .. 'ready:' .. q, id) then
      local seq = redis.call('INCR', p .. 'seq') % 4294967296
      local prio = tonumber(redis.call('HGET', jk, 'p') or '0') or 0
      prio = math.max(-1000000, math.min(1000000, prio))
      redis.call('ZADD', p .. 'ready:' .. q, string.format('%.0f', -prio * 4294967296 + seq), id)
      redis.call('SADD', p .. 'queues', q)
      n = n + 1
    end
  end
end
return n
)lua";

// A cursor page: ARGV[1] = index key, ARGV[2] = the cursor job's key, ARGV[3] = cursor id ('' = from
// the start), ARGV[4] = limit, ARGV[5] = '1' for oldest first. The ids after the cursor; 0 when the
// cursor is not a job. When the cursor left the index (its state changed), its created time finds the
// place; equal times order by id, as the sorted set does.
constexpr const char* kAfterScript = R"lua(
local key, id, limit, asc = ARGV[1], ARGV[3], tonumber(ARGV[4]), ARGV[5] == '1'
if id == '' then
  if asc then return redis.call('ZRANGE', key, 0, limit - 1) end
  return redis.call('ZREVRANGE', key, 0, limit - 1)
end
local rank
if asc then rank = redis.call('ZRANK', key, id) else rank = redis.call('ZREVRANK', key, id) end
if rank then
  if asc then return redis.call('ZRANGE', key, rank + 1, rank + limit) end
  return redis.call('ZREVRANGE', key, rank + 1, rank + limit)
end
local c = redis.call('HGET', ARGV[2], 'c')
if not c then return 0 end
local out = {}
local ties
if asc then ties = redis.call('ZRANGEBYSCORE', key, c, c) else ties = redis.call('ZREVRANGEBYSCORE', key, c, c) end
for _, m in ipairs(ties) do
  if #out < limit and ((asc and m > id) or (not asc and m < id)) then out[#out + 1] = m end
end
if #out < limit then
  local rest
  if asc then
    rest = redis.call('ZRANGEBYSCORE', key, '(' .. c, '+inf', 'LIMIT', 0, limit - #out)
  else
    rest = redis.call('ZREVRANGEBYSCORE', key, '(' .. c, '-inf', 'LIMIT', 0, limit - #out)
  end
  for _, m in ipairs(rest) do out[#out + 1] = m end
end
return out
)lua";

std::map<std::string, std::string> FlatToMap(const RedisValue& v) {
  std::map<std::string, std::string> out;
  for (size_t i = 0; i + 1 < v.elements.size(); i += 2) out[v.elements[i].AsString()] = v.elements[i + 1].AsString();
  return out;
}

std::string ExpandSpec(const std::string& stored, const JobRecord& r);

// `expand`: rebuild the full RenderSpec JSON from the stored compact spec (false: leave it compact).
Result<std::optional<JobRecord>> RecordFromFlat(const std::string& id, const RedisValue& v, bool expand = true) {
  if (!v.is_array()) return Internal("redis: expected a hash reply for job " + id);
  if (v.elements.empty()) return std::optional<JobRecord>();
  std::map<std::string, std::string> fields;
  for (const auto& [name, value] : FlatToMap(v)) {
    auto it = LongNames().find(name);
    if (it != LongNames().end()) fields[it->second] = value;
  }
  STAS_ASSIGN_OR_RETURN(JobRecord r, JobRecord::FromFields(id, fields));
  if (expand && !r.spec.empty()) r.spec = ExpandSpec(r.spec, r);
  return std::optional<JobRecord>(std::move(r));
}

// A stored spec leaves out what the record holds anyway (model, dataset, priority) and every field at
// its default (nulls, empty strings, a disabled default steering block): about 100 bytes instead of
// 500 for a plain prompt. ExpandSpec restores the RenderSpec::ToJson form the queue wrote.
std::string CompactSpecJson(const Json& spec) {
  static const Json kDefaultStas = jobspec::RenderSpec().stas.ToJson();
  Json out = Json::object();
  for (auto it = spec.begin(); it != spec.end(); ++it) {
    const std::string& k = it.key();
    if (k == "model" || k == "dataset" || k == "priority" || it->is_null()) continue;
    if (it->is_string() && it->get<std::string>().empty()) continue;
    if (k == "stas" && *it == kDefaultStas) continue;
    out[k] = *it;
  }
  return out.dump();
}

std::string CompactSpec(const std::string& spec) {
  auto parsed = ParseJson(spec, "spec");
  if (!parsed.ok() || !parsed->is_object()) return spec;
  return CompactSpecJson(*parsed);
}

std::string ExpandSpec(const std::string& stored, const JobRecord& r) {
  auto parsed = ParseJson(stored, "spec");
  if (!parsed.ok() || !parsed->is_object() || parsed->contains("model")) return stored;  // not compacted
  (*parsed)["model"] = r.model;
  (*parsed)["dataset"] = r.dataset;
  (*parsed)["priority"] = r.priority;
  auto spec = jobspec::RenderSpec::FromJson(*parsed);
  return spec.ok() ? spec->ToJson().dump() : stored;
}

// The transition as the script reads it (short field names; empty and zero values deleted).
Json TransitionJson(const Transition& t) {
  Json j = {{"id", t.job_id}, {"now_ms", std::to_string(t.now_ms)}};
  if (!t.pop_ready.empty()) j["pop"] = t.pop_ready;
  if (t.require_absent) j["require_absent"] = true;
  if (!t.from.empty()) {
    Json from = Json::array();
    for (JobState s : t.from) from.push_back(JobStateName(s));
    j["from"] = from;
  }
  if (t.lease_is) j["lease_is"] = *t.lease_is;
  if (t.lease_key_expired) j["lease_key_expired"] = true;
  Json set = Json::object();
  Json del = Json::array();
  for (const auto& [k, v] : t.set) {
    auto it = ShortNames().find(k);
    if (it == ShortNames().end() || k == "state") continue;  // state moves through `to`; ids are keys
    if (v.empty() || (v == "0" && IsNumericField(k)))
      del.push_back(it->second);
    else
      set[it->second] = k == "spec" ? CompactSpec(v) : v;
  }
  for (const auto& k : t.clear) {
    auto it = ShortNames().find(k);
    if (it != ShortNames().end()) del.push_back(it->second);
  }
  if (!set.empty()) j["set"] = set;
  if (!del.empty()) j["del"] = del;
  if (!t.incr.empty()) {
    Json incr = Json::object();
    for (const auto& [k, v] : t.incr) {
      auto it = ShortNames().find(k);
      if (it != ShortNames().end()) incr[it->second] = std::to_string(v);
    }
    j["incr"] = incr;
  }
  if (t.to) j["to"] = JobStateName(*t.to);
  if (t.lease_op == Transition::LeaseOp::kSet) {
    j["lease_op"] = "set";
    j["lease_token"] = t.lease_token;
    j["lease_ttl_ms"] = std::to_string(std::max<int64_t>(1, t.lease_ttl_ms));
  } else if (t.lease_op == Transition::LeaseOp::kDelete) {
    j["lease_op"] = "delete";
  }
  if (t.delay_until_ms) j["delay_until_ms"] = std::to_string(*t.delay_until_ms);
  if (t.enqueue) j["enqueue"] = true;
  if (!t.dead_letter_reason.empty()) j["dead_letter_reason"] = t.dead_letter_reason;
  if (!t.stats.empty()) {
    Json stats = Json::object();
    for (const auto& [k, v] : t.stats) stats[k] = std::to_string(v);
    j["stats"] = stats;
  }
  return j;
}

}  // namespace

RedisJobStore::RedisJobStore(std::shared_ptr<RedisClient> client) : client_(std::move(client)) {}

std::string RedisJobStore::IndexKey(const IndexRef& index) const {
  switch (index.kind) {
    case IndexRef::Kind::kAll: return client_->Key("all");
    case IndexRef::Kind::kState: return client_->Key(std::string("state:") + JobStateName(index.state));
    case IndexRef::Kind::kDataset: return client_->Key("dataset:" + index.dataset);
    case IndexRef::Kind::kDatasetState:
      return client_->Key(std::string("dstate:") + JobStateName(index.state) + ":" + index.dataset);
  }
  return client_->Key("all");
}

Status RedisJobStore::Ping() { return client_->Ping(); }

Status RedisJobStore::Initialize() { return client_->Ping(); }

Result<std::vector<RedisValue>> RedisJobStore::RunTransitions(const std::vector<Transition>& ts, bool brief) {
  Json batch = Json::array();
  for (const auto& t : ts) batch.push_back(TransitionJson(t));
  STAS_ASSIGN_OR_RETURN(RedisValue reply, client_->Eval(kTransitionScript, {},
                                                        {client_->options().key_prefix, SafeDump(batch), brief ? "1" : "0"}));
  if (!reply.is_array() || reply.elements.size() != ts.size())
    return Internal("redis: unexpected transition script reply");
  return std::move(reply.elements);
}

Result<TransitionResult> RedisJobStore::Apply(const Transition& t) {
  STAS_ASSIGN_OR_RETURN(auto replies, RunTransitions({t}, false));
  const RedisValue& reply = replies[0];
  if (!reply.is_array() || reply.elements.size() != 4) return Internal("redis: unexpected transition script reply");
  TransitionResult out;
  STAS_ASSIGN_OR_RETURN(int64_t applied, reply.elements[0].AsInteger());
  out.applied = applied == 1;
  out.job_id = reply.elements[3].AsString();
  if (out.job_id.empty()) return out;  // pop_ready on an empty queue
  STAS_ASSIGN_OR_RETURN(out.before, RecordFromFlat(out.job_id, reply.elements[1]));
  STAS_ASSIGN_OR_RETURN(out.after, RecordFromFlat(out.job_id, reply.elements[2]));
  return out;
}

Result<std::vector<BriefResult>> RedisJobStore::ApplyBrief(const std::vector<Transition>& ts) {
  // Chunks of a few hundred: each script call is short, so other clients' commands (heartbeats,
  // dispatch) interleave with a big batch instead of waiting for all of it.
  constexpr size_t kChunk = 500;
  std::vector<BriefResult> out;
  out.reserve(ts.size());
  for (size_t at = 0; at < ts.size(); at += kChunk) {
    std::vector<Transition> chunk(ts.begin() + at, ts.begin() + std::min(ts.size(), at + kChunk));
    STAS_ASSIGN_OR_RETURN(auto replies, RunTransitions(chunk, true));
    for (const RedisValue& r : replies) {
      if (!r.is_array() || r.elements.size() != 2) return Internal("redis: unexpected transition script reply");
      STAS_ASSIGN_OR_RETURN(int64_t applied, r.elements[0].AsInteger());
      const std::string state = r.elements[1].AsString();
      out.push_back({applied == 1, state.empty() ? std::nullopt : ParseJobState(state)});
    }
  }
  return out;
}

Result<std::vector<BriefResult>> RedisJobStore::CreateQueued(std::vector<NewJob> jobs, int64_t now_ms) {
  // Chunks as in ApplyBrief: each script call stays short so other clients' commands interleave.
  constexpr size_t kChunk = 500;
  std::vector<BriefResult> out;
  out.reserve(jobs.size());
  const std::string now = std::to_string(now_ms);
  // The stored (compact) specs, built on two threads for a big batch; each spec's JSON is freed there too.
  std::vector<std::string> stored(jobs.size());
  ParallelFor(jobs.size(), [&](size_t i) {
    const JobRecord& r = jobs[i].record;
    stored[i] = !jobs[i].spec.is_null() ? CompactSpecJson(jobs[i].spec) : r.spec.empty() ? r.spec : CompactSpec(r.spec);
    jobs[i].spec = Json();
  });
  for (size_t at = 0; at < jobs.size(); at += kChunk) {
    const size_t end = std::min(jobs.size(), at + kChunk);
    std::vector<std::string> args = {client_->options().key_prefix, now};
    args.reserve(2 + (end - at) * 16);
    for (size_t i = at; i < end; ++i) {
      const JobRecord& r = jobs[i].record;
      args.push_back(r.id);
      args.push_back(ReadyQueueName(r.model));
      args.push_back(std::to_string(std::clamp(r.priority, -kMaxQueuePriority, kMaxQueuePriority)));
      args.push_back(r.dataset);
      const size_t count_at = args.size();
      args.emplace_back();
      int fields = 0;
      auto text = [&](const char* name, const std::string& value) {
        if (value.empty()) return;
        args.push_back(name);
        args.push_back(value);
        ++fields;
      };
      auto number = [&](const char* name, int64_t value) {
        if (value != 0) text(name, std::to_string(value));
      };
      // Every JobRecord field but id, state and the creation times, as Apply would store them.
      text("j", stored[i]);
      text("m", r.model);
      text("d", r.dataset);
      number("p", r.priority);
      number("a", r.attempts);
      number("t", r.step);
      number("n", r.steps);
      text("g", r.stage);
      text("w", r.worker);
      text("l", r.lease);
      text("e", r.error);
      text("o", r.output);
      text("f", r.manifest);
      text("i", r.timings);
      text("x", r.api);
      number("b", r.started_ms);
      number("z", r.finished_ms);
      number("h", r.heartbeat_ms);
      number("r", r.retry_at_ms);
      args[count_at] = std::to_string(fields);
    }
    STAS_ASSIGN_OR_RETURN(RedisValue reply, client_->Eval(kCreateScript, {}, args));
    if (!reply.is_array() || reply.elements.size() != end - at)
      return Internal("redis: unexpected create script reply");
    for (const RedisValue& v : reply.elements) {
      const std::string state = v.AsString();
      out.push_back({state.empty(), state.empty() ? std::nullopt : ParseJobState(state)});
    }
  }
  return out;
}

Result<std::vector<std::optional<JobState>>> RedisJobStore::GetStates(const std::vector<std::string>& ids) {
  std::vector<std::vector<std::string>> commands;
  commands.reserve(ids.size());
  for (const auto& id : ids) commands.push_back({"HGET", JobKey(id), "s"});
  STAS_ASSIGN_OR_RETURN(auto replies, client_->Pipeline(commands));
  std::vector<std::optional<JobState>> out;
  out.reserve(ids.size());
  for (auto& r : replies) {
    if (!r.ok()) return r.status();
    out.push_back(r->is_nil() ? std::nullopt : ParseJobState(r->AsString()));
  }
  return out;
}

Result<std::optional<JobRecord>> RedisJobStore::Get(const std::string& id) {
  STAS_ASSIGN_OR_RETURN(RedisValue v, client_->Command({"HGETALL", JobKey(id)}));
  return RecordFromFlat(id, v);
}

Result<std::vector<JobRecord>> RedisJobStore::ReadRecords(const std::vector<std::string>& ids, bool expand) {
  std::vector<std::vector<std::string>> commands;
  commands.reserve(ids.size());
  for (const auto& id : ids) commands.push_back({"HGETALL", JobKey(id)});
  STAS_ASSIGN_OR_RETURN(auto replies, client_->Pipeline(commands));
  std::vector<JobRecord> out;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (!replies[i].ok()) return replies[i].status();
    STAS_ASSIGN_OR_RETURN(std::optional<JobRecord> r, RecordFromFlat(ids[i], *replies[i], expand));
    if (r) out.push_back(std::move(*r));
  }
  return out;
}

Result<std::vector<JobRecord>> RedisJobStore::GetMany(const std::vector<std::string>& ids) {
  return ReadRecords(ids, /*expand=*/true);
}

Result<std::vector<JobRecord>> RedisJobStore::GetManyForListing(const std::vector<std::string>& ids) {
  return ReadRecords(ids, /*expand=*/false);
}

Result<bool> RedisJobStore::Delete(const std::string& id) {
  STAS_ASSIGN_OR_RETURN(RedisValue v, client_->Eval(kDeleteScript, {}, {client_->options().key_prefix, id}));
  STAS_ASSIGN_OR_RETURN(int64_t n, v.AsInteger());
  return n == 1;
}

Result<std::vector<std::string>> RedisJobStore::ListIds(const IndexRef& index, int64_t offset, int64_t limit) {
  std::vector<std::string> out;
  if (limit <= 0) return out;
  offset = std::max<int64_t>(0, offset);
  STAS_ASSIGN_OR_RETURN(RedisValue v, client_->Command({"ZREVRANGE", IndexKey(index), std::to_string(offset),
                                                        std::to_string(offset + limit - 1)}));
  for (const auto& e : v.elements) out.push_back(e.AsString());
  return out;
}

Result<std::vector<std::string>> RedisJobStore::ListIdsAfter(const IndexRef& index, const std::string& after_id,
                                                            int64_t limit, bool oldest_first) {
  std::vector<std::string> out;
  if (limit <= 0) return out;
  STAS_ASSIGN_OR_RETURN(RedisValue v, client_->Eval(kAfterScript, {},
                                                    {IndexKey(index), JobKey(after_id), after_id, std::to_string(limit),
                                                     oldest_first ? "1" : "0"}));
  if (!v.is_array()) return InvalidArgument("cursor '" + after_id + "' is not a job");
  for (const auto& e : v.elements) out.push_back(e.AsString());
  return out;
}

Result<int64_t> RedisJobStore::Count(const IndexRef& index) {
  STAS_ASSIGN_OR_RETURN(RedisValue v, client_->Command({"ZCARD", IndexKey(index)}));
  return v.AsInteger();
}

Result<std::map<JobState, int64_t>> RedisJobStore::CountByState(const std::string& dataset) {
  std::vector<std::vector<std::string>> commands;
  for (JobState s : kAllJobStates)
    commands.push_back({"ZCARD", IndexKey(dataset.empty() ? IndexRef::State(s) : IndexRef::DatasetState(dataset, s))});
  STAS_ASSIGN_OR_RETURN(auto replies, client_->Pipeline(commands));
  std::map<JobState, int64_t> out;
  size_t i = 0;
  for (JobState s : kAllJobStates) {
    auto& r = replies[i++];
    if (!r.ok()) return r.status();
    STAS_ASSIGN_OR_RETURN(out[s], r->AsInteger());
  }
  return out;
}

Result<std::vector<std::string>> RedisJobStore::Datasets() {
  STAS_ASSIGN_OR_RETURN(RedisValue v, client_->Command({"ZRANGE", client_->Key("datasets"), "0", "-1"}));
  std::vector<std::string> out;
  for (const auto& e : v.elements) out.push_back(e.AsString());
  return out;
}

Result<std::map<std::string, int64_t>> RedisJobStore::ReadyDepths() {
  STAS_ASSIGN_OR_RETURN(RedisValue names, client_->Command({"SMEMBERS", client_->Key("queues")}));
  std::vector<std::string> queues;
  std::vector<std::vector<std::string>> commands;
  for (const auto& e : names.elements) {
    queues.push_back(e.AsString());
    commands.push_back({"ZCARD", client_->Key("ready:" + queues.back())});
  }
  STAS_ASSIGN_OR_RETURN(auto replies, client_->Pipeline(commands));
  std::map<std::string, int64_t> out;
  for (size_t i = 0; i < queues.size(); ++i) {
    if (!replies[i].ok()) return replies[i].status();
    STAS_ASSIGN_OR_RETURN(out[queues[i]], replies[i]->AsInteger());
  }
  return out;
}

Result<std::vector<std::string>> RedisJobStore::ReadyHead(const std::string& queue, int64_t limit) {
  std::vector<std::string> out;
  if (limit < 1) return out;
  STAS_ASSIGN_OR_RETURN(RedisValue v, client_->Command({"ZRANGE", client_->Key("ready:" + queue), "0",
                                                        std::to_string(limit - 1)}));
  for (const auto& e : v.elements) out.push_back(e.AsString());
  return out;
}

Result<int64_t> RedisJobStore::RepairReadyQueues() {
  STAS_ASSIGN_OR_RETURN(RedisValue v, client_->Eval(kRepairScript, {}, {client_->options().key_prefix}));
  return v.AsInteger();
}

Result<std::vector<bool>> RedisJobStore::LeasesAlive(const std::vector<std::string>& ids) {
  std::vector<std::vector<std::string>> commands;
  for (const auto& id : ids) commands.push_back({"EXISTS", LeaseKey(id)});
  STAS_ASSIGN_OR_RETURN(auto replies, client_->Pipeline(commands));
  std::vector<bool> out;
  for (auto& r : replies) {
    if (!r.ok()) return r.status();
    out.push_back(r->integer == 1);
  }
  return out;
}

Result<std::vector<std::string>> RedisJobStore::DueDelayed(int64_t now_ms, int limit) {
  STAS_ASSIGN_OR_RETURN(RedisValue v, client_->Command({"ZRANGEBYSCORE", client_->Key("delayed"), "-inf",
                                                        std::to_string(now_ms), "LIMIT", "0",
                                                        std::to_string(std::max(1, limit))}));
  std::vector<std::string> out;
  for (const auto& e : v.elements) out.push_back(e.AsString());
  return out;
}

Result<int64_t> RedisJobStore::DelayedCount() {
  STAS_ASSIGN_OR_RETURN(RedisValue v, client_->Command({"ZCARD", client_->Key("delayed")}));
  return v.AsInteger();
}

Result<std::vector<DeadLetter>> RedisJobStore::DeadLetters(int limit) {
  STAS_ASSIGN_OR_RETURN(RedisValue v,
                        client_->Command({"XREVRANGE", DeadKey(), "+", "-", "COUNT", std::to_string(std::max(1, limit))}));
  std::vector<DeadLetter> out;
  for (const RedisValue& e : v.elements) {
    if (!e.is_array() || e.elements.size() < 2) continue;
    const auto f = FlatToMap(e.elements[1]);
    DeadLetter d;
    d.entry_id = e.elements[0].AsString();
    auto get = [&](const char* k) {
      auto it = f.find(k);
      return it == f.end() ? std::string() : it->second;
    };
    d.job_id = get("job");
    d.reason = get("reason");
    d.attempts = std::atoi(get("attempts").c_str());
    d.at_ms = std::strtoll(get("at").c_str(), nullptr, 10);
    out.push_back(std::move(d));
  }
  return out;
}

Status RedisJobStore::IncrementStats(const std::map<std::string, int64_t>& deltas) {
  std::vector<std::vector<std::string>> commands;
  for (const auto& [k, v] : deltas) commands.push_back({"HINCRBY", client_->Key("stats"), k, std::to_string(v)});
  STAS_ASSIGN_OR_RETURN(auto replies, client_->Pipeline(commands));
  for (auto& r : replies)
    if (!r.ok()) return r.status();
  return Status::Ok();
}

Result<std::map<std::string, int64_t>> RedisJobStore::Stats() {
  STAS_ASSIGN_OR_RETURN(RedisValue v, client_->Command({"HGETALL", client_->Key("stats")}));
  std::map<std::string, int64_t> out;
  for (const auto& [k, value] : FlatToMap(v)) out[k] = std::strtoll(value.c_str(), nullptr, 10);
  return out;
}

}  // namespace stas::coordinator
