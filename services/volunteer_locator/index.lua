-- The locator's index operations. Each runs atomically inside Redis, so a claim, a
-- release, a duty change and a ping can never interleave half-way.
--
-- ARGV[1] names the operation, ARGV[2] is the key prefix ("locator:"), the rest are the
-- operation's arguments. Keys (see index.py): <p>geo:<kind> (GEO of searchable
-- responders), <p>seen (ZSET last ping time), <p>status (HASH free|offered|busy),
-- <p>holder (HASH incident holding the responder), <p>holds (ZSET hold deadlines) and
-- <p>r:<id> (HASH kind, skills, travel_mode, on_duty, duty_ts, lat, lon, ts).

local op = ARGV[1]
local P = ARGV[2]
local STATUS = P .. 'status'
local HOLDER = P .. 'holder'
local HOLDS = P .. 'holds'
local SEEN = P .. 'seen'
local MAX_LAT = 85.05112878

local function rkey(id) return P .. 'r:' .. id end
local function geokey(kind) return P .. 'geo:' .. kind end

local function indexable(lat)
  local v = tonumber(lat)
  return v ~= nil and v <= MAX_LAT and v >= -MAX_LAT
end

-- Searchable means on duty, free and positioned; staleness is checked at query time.
local function reindex(id)
  local a = redis.call('HMGET', rkey(id), 'kind', 'on_duty', 'lat', 'lon')
  if not a[1] then return end
  local status = redis.call('HGET', STATUS, id)
  if a[2] == '1' and status == 'free' and a[3] and indexable(a[3]) then
    redis.call('GEOADD', geokey(a[1]), a[4], a[3], id)
  else
    redis.call('ZREM', geokey(a[1]), id)
  end
end

-- Apply a duty state only if it is at least as new as the one held (events may lag the API).
local function apply_duty(id, on_duty, ts)
  local held = tonumber(redis.call('HGET', rkey(id), 'duty_ts') or '-1')
  if held > tonumber(ts) then return 0 end
  redis.call('HSET', rkey(id), 'on_duty', on_duty, 'duty_ts', ts)
  return 1
end

local ops = {}

-- ARGV: (id, kind, skills, travel_mode, on_duty, duty_ts)*
function ops.upsert()
  for i = 3, #ARGV, 6 do
    local id = ARGV[i]
    redis.call('HSET', rkey(id), 'kind', ARGV[i + 1], 'skills', ARGV[i + 2],
      'travel_mode', ARGV[i + 3])
    apply_duty(id, ARGV[i + 4], ARGV[i + 5])
    redis.call('HSETNX', STATUS, id, 'free')
    reindex(id)
  end
  return 1
end

-- ARGV: id, on_duty ('1'|'0'), duty_ts
function ops.duty()
  local id = ARGV[3]
  if redis.call('EXISTS', rkey(id)) == 0 then return -1 end
  local applied = apply_duty(id, ARGV[4], ARGV[5])
  redis.call('HSETNX', STATUS, id, 'free')
  reindex(id)
  return applied
end

-- ARGV: stale_cutoff, (id, lat, lon, ts)*. Returns per ping: 1 indexed, 0 older than
-- the held one (ignored), -1 unknown responder.
function ops.pings()
  local cutoff = tonumber(ARGV[3])
  local out = {}
  for i = 4, #ARGV, 4 do
    local id, lat, lon, ts = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
    local key = rkey(id)
    local a = redis.call('HMGET', key, 'kind', 'ts', 'on_duty')
    if not a[1] then
      out[#out + 1] = -1
    elseif a[2] and tonumber(a[2]) >= ts then
      out[#out + 1] = 0
    else
      redis.call('HSET', key, 'lat', lat, 'lon', lon, 'ts', ARGV[i + 3])
      redis.call('ZADD', SEEN, ts, id)
      if a[3] == '1' and ts >= cutoff and indexable(lat)
          and redis.call('HGET', STATUS, id) == 'free' then
        redis.call('GEOADD', geokey(a[1]), lon, lat, id)
      end
      out[#out + 1] = 1
    end
  end
  return out
end

local function has_all(skills, wanted)
  for _, s in ipairs(wanted) do
    if not skills or not string.find(skills, s, 1, true) then return false end
  end
  return true
end

-- ARGV: lon, lat, radius_m, stale_cutoff, nkinds, kinds..., nskills, skills..., exclude...
-- Returns {id, kind, travel_mode, distance_m} for every eligible responder in the radius.
function ops.search()
  local lon, lat, radius, cutoff = ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6])
  local i = 7
  local kinds = {}
  for j = 1, tonumber(ARGV[i]) do kinds[j] = ARGV[i + j] end
  i = i + #kinds + 1
  local wanted = {}
  for j = 1, tonumber(ARGV[i]) do wanted[j] = '|' .. ARGV[i + j] .. '|' end
  i = i + #wanted + 1
  local excluded = {}
  for j = i, #ARGV do excluded[ARGV[j]] = true end
  -- Every op keeps a GEO key to on-duty free responders only, so the search need not
  -- re-check that (the claim does, atomically); it checks freshness and skills.
  local out = {}
  for _, kind in ipairs(kinds) do
    local hits = redis.call('GEOSEARCH', geokey(kind), 'FROMLONLAT', lon, lat,
      'BYRADIUS', radius, 'm', 'WITHDIST')
    for _, hit in ipairs(hits) do
      local id = hit[1]
      if not excluded[id] and tonumber(redis.call('ZSCORE', SEEN, id) or '-1') >= cutoff then
        if #wanted == 0 then
          out[#out + 1] = {id, kind, redis.call('HGET', rkey(id), 'travel_mode'), hit[2]}
        else
          local a = redis.call('HMGET', rkey(id), 'skills', 'travel_mode')
          if has_all(a[1], wanted) then out[#out + 1] = {id, kind, a[2], hit[2]} end
        end
      end
    end
  end
  return out
end

-- ARGV: incident, hold_deadline, stale_cutoff, candidate ids in ranked order.
-- Books the first candidate that is on duty, free, positioned and fresh: status offered,
-- held for the incident until the deadline. A repeat by the same incident gets the same
-- responder back. Returns {id, kind, travel_mode, lat, lon} or false.
function ops.claim()
  local incident, deadline, cutoff = ARGV[3], ARGV[4], tonumber(ARGV[5])
  for i = 6, #ARGV do
    local id = ARGV[i]
    local a = redis.call('HMGET', rkey(id), 'kind', 'on_duty', 'lat', 'lon', 'travel_mode')
    if a[1] and a[2] == '1' and a[3] then
      local status = redis.call('HGET', STATUS, id)
      local seen = tonumber(redis.call('ZSCORE', SEEN, id) or '-1')
      if status == 'free' and seen >= cutoff then
        redis.call('HSET', STATUS, id, 'offered')
        redis.call('HSET', HOLDER, id, incident)
        redis.call('ZADD', HOLDS, deadline, id)
        redis.call('ZREM', geokey(a[1]), id)
        return {id, a[1], a[5], a[3], a[4]}
      end
      if status == 'offered' and redis.call('HGET', HOLDER, id) == incident then
        redis.call('ZADD', HOLDS, deadline, id)
        return {id, a[1], a[5], a[3], a[4]}
      end
    end
  end
  return false
end

-- ARGV: id, incident. Frees the responder only if still held for that incident.
function ops.release()
  local id, incident = ARGV[3], ARGV[4]
  if redis.call('HGET', HOLDER, id) ~= incident then return 0 end
  redis.call('HSET', STATUS, id, 'free')
  redis.call('HDEL', HOLDER, id)
  redis.call('ZREM', HOLDS, id)
  reindex(id)
  return 1
end

-- ARGV: id, incident. Dispatch booked the responder: busy, out of the index, no hold timer.
function ops.busy()
  local id, incident = ARGV[3], ARGV[4]
  if redis.call('EXISTS', rkey(id)) == 0 then return -1 end
  redis.call('HSET', STATUS, id, 'busy')
  redis.call('HSET', HOLDER, id, incident)
  redis.call('ZREM', HOLDS, id)
  reindex(id)
  return 1
end

-- ARGV: now, limit. Frees offered responders whose hold has lapsed.
function ops.expire()
  local ids = redis.call('ZRANGEBYSCORE', HOLDS, '-inf', ARGV[3], 'LIMIT', 0, ARGV[4])
  local freed = 0
  for _, id in ipairs(ids) do
    redis.call('ZREM', HOLDS, id)
    if redis.call('HGET', STATUS, id) == 'offered' then
      redis.call('HSET', STATUS, id, 'free')
      redis.call('HDEL', HOLDER, id)
      reindex(id)
      freed = freed + 1
    end
  end
  return freed
end

-- ARGV: from (exclusive), to. Drops responders whose last ping fell stale in that window
-- from the GEO keys; the search also checks freshness, this only keeps the index lean.
function ops.unstale()
  local ids = redis.call('ZRANGEBYSCORE', SEEN, '(' .. ARGV[3], ARGV[4])
  for _, id in ipairs(ids) do
    local kind = redis.call('HGET', rkey(id), 'kind')
    if kind then redis.call('ZREM', geokey(kind), id) end
  end
  return #ids
end

return ops[op]()
