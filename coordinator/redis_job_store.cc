#include "coordinator/redis_job_store.h"

#include <cstdlib>

#include "common/json.h"
#include "common/log.h"
#include "common/text.h"

namespace stas::coordinator {

namespace {

// One Transition (see job_store.h), atomically. ARGV[1] = key prefix, ARGV[2] = the transition as JSON
// (numbers travel as strings so 13-digit millisecond times never meet Lua's number formatting).
// Returns {applied, before (flat HGETALL), after (flat HGETALL)}.
constexpr const char* kTransitionScript = R"lua(
local p = ARGV[1]
local t = cjson.decode(ARGV[2])
local id = t.id
local jk = p .. 'job:' .. id
local lk = p .. 'lease:' .. id
local sk = p .. 'jobs'
local before = redis.call('HGETALL', jk)
local cur = {}
for i = 1, #before, 2 do cur[before[i]] = before[i + 1] end
local exists = #before > 0
local function result(applied)
  if applied then return {1, before, redis.call('HGETALL', jk)} end
  return {0, before, before}
end
if t.require_absent then
  if exists then return result(false) end
else
  if not exists then return result(false) end
  if t.from then
    local ok = false
    for _, s in ipairs(t.from) do if cur['state'] == s then ok = true end end
    if not ok then return result(false) end
  end
  if t.lease_is ~= nil and (cur['lease'] or '') ~= t.lease_is then return result(false) end
  if t.ticket_is ~= nil and (cur['ticket'] or '') ~= t.ticket_is then return result(false) end
  if t.lease_key_expired and redis.call('EXISTS', lk) == 1 then return result(false) end
end
if t.ack_ticket then
  local ticket = cur['ticket']
  if ticket and ticket ~= '' then
    redis.call('XACK', sk, 'coordinators', ticket)
    redis.call('XDEL', sk, ticket)
  end
  redis.call('HDEL', jk, 'ticket')
end
if t.set then
  local args = {}
  for k, v in pairs(t.set) do args[#args + 1] = k; args[#args + 1] = v end
  if #args > 0 then redis.call('HSET', jk, unpack(args)) end
end
if t.clear then for _, k in ipairs(t.clear) do redis.call('HDEL', jk, k) end end
if t.incr then for k, v in pairs(t.incr) do redis.call('HINCRBY', jk, k, v) end end
redis.call('HSET', jk, 'updated_ms', t.now_ms)
local created = redis.call('HGET', jk, 'created_ms') or '0'
if not exists then redis.call('ZADD', p .. 'all', created, id) end
if t.to then
  local old = cur['state']
  if old and old ~= t.to then redis.call('ZREM', p .. 'state:' .. old, id) end
  redis.call('HSET', jk, 'state', t.to)
  redis.call('ZADD', p .. 'state:' .. t.to, created, id)
  if t.to ~= 'queued' then redis.call('ZREM', p .. 'delayed', id) end
end
if t.lease_op == 'set' then
  redis.call('SET', lk, t.lease_token, 'PX', t.lease_ttl_ms)
elseif t.lease_op == 'delete' then
  redis.call('DEL', lk)
end
if t.delay_until_ms then redis.call('ZADD', p .. 'delayed', t.delay_until_ms, id) end
if t.enqueue_ticket then
  redis.call('ZREM', p .. 'delayed', id)
  local eid = redis.call('XADD', sk, '*', 'job', id, 'attempt', redis.call('HGET', jk, 'attempts') or '0')
  redis.call('HSET', jk, 'ticket', eid)
end
if t.dead_letter_reason then
  redis.call('XADD', p .. 'dead', 'MAXLEN', '~', '10000', '*', 'job', id, 'reason', t.dead_letter_reason,
             'attempts', redis.call('HGET', jk, 'attempts') or '0', 'at', t.now_ms)
end
if t.stats then for k, v in pairs(t.stats) do redis.call('HINCRBY', p .. 'stats', k, v) end end
if t.dataset then
  local old = cur['dataset']
  if old and old ~= '' and old ~= t.dataset then redis.call('ZREM', p .. 'dataset:' .. old, id) end
  redis.call('ZADD', p .. 'dataset:' .. t.dataset, created, id)
  redis.call('ZADD', p .. 'datasets', 'NX', created, t.dataset)
end
return result(true)
)lua";

// Removes a job and every trace of it. ARGV[1] = prefix, ARGV[2] = id. Returns 1 when it existed.
constexpr const char* kDeleteScript = R"lua(
local p = ARGV[1]
local id = ARGV[2]
local jk = p .. 'job:' .. id
if redis.call('EXISTS', jk) == 0 then return 0 end
local state = redis.call('HGET', jk, 'state')
local dataset = redis.call('HGET', jk, 'dataset')
local ticket = redis.call('HGET', jk, 'ticket')
if state then redis.call('ZREM', p .. 'state:' .. state, id) end
if dataset and dataset ~= '' then redis.call('ZREM', p .. 'dataset:' .. dataset, id) end
if ticket and ticket ~= '' then
  redis.call('XACK', p .. 'jobs', 'coordinators', ticket)
  redis.call('XDEL', p .. 'jobs', ticket)
end
redis.call('ZREM', p .. 'all', id)
redis.call('ZREM', p .. 'delayed', id)
redis.call('DEL', p .. 'lease:' .. id)
redis.call('DEL', jk)
return 1
)lua";

std::map<std::string, std::string> FlatToMap(const RedisValue& v) {
  std::map<std::string, std::string> out;
  for (size_t i = 0; i + 1 < v.elements.size(); i += 2) out[v.elements[i].AsString()] = v.elements[i + 1].AsString();
  return out;
}

Result<std::optional<JobRecord>> RecordFromFlat(const std::string& id, const RedisValue& v) {
  if (!v.is_array()) return Internal("redis: expected a hash reply for job " + id);
  if (v.elements.empty()) return std::optional<JobRecord>();
  STAS_ASSIGN_OR_RETURN(JobRecord r, JobRecord::FromFields(id, FlatToMap(v)));
  return std::optional<JobRecord>(std::move(r));
}

// [[id, [field, value, ...]], ...] -> tickets; entries whose data was deleted (nil) are collected in
// `deleted` (they are still pending and must be acknowledged).
std::vector<Ticket> ParseTicketEntries(const RedisValue& entries, std::vector<std::string>* deleted) {
  std::vector<Ticket> out;
  for (const RedisValue& e : entries.elements) {
    if (!e.is_array() || e.elements.size() < 2) continue;
    const std::string id = e.elements[0].AsString();
    const auto fields = FlatToMap(e.elements[1]);
    auto job = fields.find("job");
    if (e.elements[1].is_nil() || job == fields.end() || job->second.empty()) {
      if (deleted) deleted->push_back(id);
      continue;
    }
    out.push_back({id, job->second});
  }
  return out;
}

std::string NextEntryId(const std::string& id) {
  const size_t dash = id.find('-');
  if (dash == std::string::npos) return id + "-1";
  return id.substr(0, dash + 1) + std::to_string(std::strtoull(id.substr(dash + 1).c_str(), nullptr, 10) + 1);
}

}  // namespace

RedisJobStore::RedisJobStore(std::shared_ptr<RedisClient> client) : client_(std::move(client)) {}

std::string RedisJobStore::IndexKey(const IndexRef& index) const {
  switch (index.kind) {
    case IndexRef::Kind::kAll: return client_->Key("all");
    case IndexRef::Kind::kState: return client_->Key(std::string("state:") + JobStateName(index.state));
    case IndexRef::Kind::kDataset: return client_->Key("dataset:" + index.dataset);
  }
  return client_->Key("all");
}

Status RedisJobStore::Ping() { return client_->Ping(); }

Status RedisJobStore::Initialize() {
  auto r = client_->Command({"XGROUP", "CREATE", StreamKey(), kGroup, "0", "MKSTREAM"});
  if (!r.ok() && !IsRedisError(r.status(), "BUSYGROUP")) return r.status();
  return Status::Ok();
}

Result<TransitionResult> RedisJobStore::Apply(const Transition& t) {
  Json j = {{"id", t.job_id}, {"now_ms", std::to_string(t.now_ms)}};
  if (t.require_absent) j["require_absent"] = true;
  if (!t.from.empty()) {
    Json from = Json::array();
    for (JobState s : t.from) from.push_back(JobStateName(s));
    j["from"] = from;
  }
  if (t.lease_is) j["lease_is"] = *t.lease_is;
  if (t.ticket_is) j["ticket_is"] = *t.ticket_is;
  if (t.lease_key_expired) j["lease_key_expired"] = true;
  if (t.ack_ticket) j["ack_ticket"] = true;
  if (!t.set.empty()) j["set"] = t.set;
  if (!t.clear.empty()) j["clear"] = t.clear;
  if (!t.incr.empty()) {
    Json incr = Json::object();
    for (const auto& [k, v] : t.incr) incr[k] = std::to_string(v);
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
  if (t.enqueue_ticket) j["enqueue_ticket"] = true;
  if (!t.dead_letter_reason.empty()) j["dead_letter_reason"] = t.dead_letter_reason;
  if (!t.stats.empty()) {
    Json stats = Json::object();
    for (const auto& [k, v] : t.stats) stats[k] = std::to_string(v);
    j["stats"] = stats;
  }
  if (!t.dataset.empty()) j["dataset"] = t.dataset;

  STAS_ASSIGN_OR_RETURN(RedisValue reply,
                        client_->Eval(kTransitionScript, {}, {client_->options().key_prefix, SafeDump(j)}));
  if (!reply.is_array() || reply.elements.size() != 3) return Internal("redis: unexpected transition script reply");
  TransitionResult out;
  STAS_ASSIGN_OR_RETURN(int64_t applied, reply.elements[0].AsInteger());
  out.applied = applied == 1;
  STAS_ASSIGN_OR_RETURN(out.before, RecordFromFlat(t.job_id, reply.elements[1]));
  STAS_ASSIGN_OR_RETURN(out.after, RecordFromFlat(t.job_id, reply.elements[2]));
  return out;
}

Result<std::optional<JobRecord>> RedisJobStore::Get(const std::string& id) {
  STAS_ASSIGN_OR_RETURN(RedisValue v, client_->Command({"HGETALL", JobKey(id)}));
  return RecordFromFlat(id, v);
}

Result<std::vector<JobRecord>> RedisJobStore::GetMany(const std::vector<std::string>& ids) {
  std::vector<std::vector<std::string>> commands;
  commands.reserve(ids.size());
  for (const auto& id : ids) commands.push_back({"HGETALL", JobKey(id)});
  STAS_ASSIGN_OR_RETURN(auto replies, client_->Pipeline(commands));
  std::vector<JobRecord> out;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (!replies[i].ok()) return replies[i].status();
    STAS_ASSIGN_OR_RETURN(std::optional<JobRecord> r, RecordFromFlat(ids[i], *replies[i]));
    if (r) out.push_back(std::move(*r));
  }
  return out;
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

Result<int64_t> RedisJobStore::Count(const IndexRef& index) {
  STAS_ASSIGN_OR_RETURN(RedisValue v, client_->Command({"ZCARD", IndexKey(index)}));
  return v.AsInteger();
}

Result<std::vector<std::string>> RedisJobStore::Datasets() {
  STAS_ASSIGN_OR_RETURN(RedisValue v, client_->Command({"ZRANGE", client_->Key("datasets"), "0", "-1"}));
  std::vector<std::string> out;
  for (const auto& e : v.elements) out.push_back(e.AsString());
  return out;
}

Result<std::vector<Ticket>> RedisJobStore::ReadGroup(const std::string& consumer, const std::string& id, int count) {
  std::vector<std::string> argv = {"XREADGROUP", "GROUP", kGroup, consumer, "COUNT", std::to_string(std::max(1, count)),
                                   "STREAMS", StreamKey(), id};
  auto r = client_->Command(argv);
  if (!r.ok() && IsRedisError(r.status(), "NOGROUP")) {
    // The stream or group vanished (FLUSHALL, a fresh server): recreate and read again.
    STAS_LOG_WARN("redis consumer group missing on {}; recreating it", StreamKey());
    STAS_RETURN_IF_ERROR(Initialize());
    r = client_->Command(argv);
  }
  if (!r.ok()) return r.status();
  std::vector<Ticket> out;
  if (r->is_nil() || r->elements.empty()) return out;
  // [[stream, [[id, fields], ...]]]
  const RedisValue& stream = r->elements[0];
  if (!stream.is_array() || stream.elements.size() < 2) return Internal("redis: unexpected XREADGROUP reply");
  std::vector<std::string> deleted;
  out = ParseTicketEntries(stream.elements[1], &deleted);
  if (!deleted.empty()) STAS_RETURN_IF_ERROR(AckTickets(deleted));
  return out;
}

Result<std::vector<Ticket>> RedisJobStore::ReadNewTickets(const std::string& consumer, int count) {
  return ReadGroup(consumer, ">", count);
}

Result<std::vector<Ticket>> RedisJobStore::ReadPendingTickets(const std::string& consumer, const std::string& after,
                                                              int count) {
  // XREADGROUP with an id returns this consumer's pending entries with ids greater than it.
  return ReadGroup(consumer, after.empty() ? "0" : after, count);
}

Result<std::vector<Ticket>> RedisJobStore::ClaimStaleTickets(const std::string& consumer, int64_t min_idle_ms,
                                                             const std::string& cursor, int count,
                                                             std::string* next_cursor) {
  if (force_xpending_claim_) return ClaimWithXPending(consumer, min_idle_ms, cursor, count, next_cursor);
  auto r = client_->Command({"XAUTOCLAIM", StreamKey(), kGroup, consumer, std::to_string(std::max<int64_t>(0, min_idle_ms)),
                             cursor.empty() ? "0-0" : cursor, "COUNT", std::to_string(std::max(1, count))});
  if (!r.ok() && (IsRedisError(r.status(), "ERR unknown command") || IsRedisError(r.status(), "ERR Unknown"))) {
    return ClaimWithXPending(consumer, min_idle_ms, cursor, count, next_cursor);
  }
  if (!r.ok() && IsRedisError(r.status(), "NOGROUP")) {
    STAS_RETURN_IF_ERROR(Initialize());
    if (next_cursor) *next_cursor = "0-0";
    return std::vector<Ticket>();
  }
  if (!r.ok()) return r.status();
  // [next_cursor, [[id, fields], ...], (Redis 7:) [deleted ids]]
  if (!r->is_array() || r->elements.size() < 2) return Internal("redis: unexpected XAUTOCLAIM reply");
  if (next_cursor) *next_cursor = r->elements[0].AsString();
  std::vector<std::string> deleted;
  std::vector<Ticket> out = ParseTicketEntries(r->elements[1], &deleted);
  if (!deleted.empty()) STAS_RETURN_IF_ERROR(AckTickets(deleted));
  return out;
}

Result<std::vector<Ticket>> RedisJobStore::ClaimWithXPending(const std::string& consumer, int64_t min_idle_ms,
                                                             const std::string& cursor, int count,
                                                             std::string* next_cursor) {
  const std::string start = cursor.empty() || cursor == "0-0" ? "-" : cursor;
  STAS_ASSIGN_OR_RETURN(RedisValue pending, client_->Command({"XPENDING", StreamKey(), kGroup, start, "+",
                                                              std::to_string(std::max(1, count))}));
  std::vector<std::string> ids;
  std::string last;
  for (const RedisValue& p : pending.elements) {
    if (!p.is_array() || p.elements.size() < 4) continue;
    last = p.elements[0].AsString();
    auto idle = p.elements[2].AsInteger();
    if (idle.ok() && *idle >= min_idle_ms) ids.push_back(last);
  }
  if (next_cursor)
    *next_cursor = static_cast<int>(pending.elements.size()) < std::max(1, count) || last.empty() ? "0-0" : NextEntryId(last);
  std::vector<Ticket> out;
  if (ids.empty()) return out;
  std::vector<std::string> argv = {"XCLAIM", StreamKey(), kGroup, consumer, std::to_string(std::max<int64_t>(0, min_idle_ms))};
  argv.insert(argv.end(), ids.begin(), ids.end());
  STAS_ASSIGN_OR_RETURN(RedisValue claimed, client_->Command(argv));
  return ParseTicketEntries(claimed, nullptr);
}

Status RedisJobStore::AckTickets(const std::vector<std::string>& entry_ids) {
  if (entry_ids.empty()) return Status::Ok();
  std::vector<std::string> ack = {"XACK", StreamKey(), kGroup};
  std::vector<std::string> del = {"XDEL", StreamKey()};
  ack.insert(ack.end(), entry_ids.begin(), entry_ids.end());
  del.insert(del.end(), entry_ids.begin(), entry_ids.end());
  STAS_ASSIGN_OR_RETURN(auto replies, client_->Pipeline({ack, del}));
  for (auto& r : replies)
    if (!r.ok()) return r.status();
  return Status::Ok();
}

Result<int64_t> RedisJobStore::PendingTicketCount() {
  auto r = client_->Command({"XPENDING", StreamKey(), kGroup});
  if (!r.ok() && IsRedisError(r.status(), "NOGROUP")) return int64_t{0};
  if (!r.ok()) return r.status();
  if (!r->is_array() || r->elements.empty()) return Internal("redis: unexpected XPENDING reply");
  return r->elements[0].AsInteger();
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
