-- The locator's index operations. Each runs atomically inside Redis, so a claim, a
-- release, a duty change and a ping can never interleave half-way.
--
-- ARGV[1] names the operation, ARGV[2] is the key prefix ("locator:"), the rest are the
-- operation's arguments. Keys (see index.py): <p>geo:<kind>:<travel_mode> (GEO of
-- searchable responders; one key per kind and mode, so within a key distance order is
-- ETA order for a straight-line provider), <p>seen (ZSET last ping time), <p>status (HASH free|offered|busy),
-- <p>holder (HASH incident holding the responder), <p>holds (ZSET hold deadlines) and
-- <p>r:<id> (HASH kind, skills, travel_mode, on_duty, duty_ts, lat, lon, ts, revoked) and
-- <p>placed (GEO of every responder's newest position, whatever their state: the decision
-- trace looks there for the closer responders a claim passed over).

local op = ARGV[1]
local P = ARGV[2]
local STATUS = P .. 'status'
local HOLDER = P .. 'holder'
local HOLDS = P .. 'holds'
local SEEN = P .. 'seen'
local PLACED = P .. 'placed'
local MAX_LAT = 85.05112878

local function rkey(id) return P .. 'r:' .. id end
local function geokey(kind, mode) return P .. 'geo:' .. kind .. ':' .. (mode or '') end

local function indexable(lat)
  local v = tonumber(lat)
  return v ~= nil and v <= MAX_LAT and v >= -MAX_LAT
end

-- Searchable means on duty, free and positioned; staleness is checked at query time.
local function reindex(id)
  local a = redis.call('HMGET', rkey(id), 'kind', 'on_duty', 'lat', 'lon', 'travel_mode')
  if not a[1] then return end
  local status = redis.call('HGET', STATUS, id)
  if a[2] == '1' and status == 'free' and a[3] and indexable(a[3]) then
    redis.call('GEOADD', geokey(a[1], a[5]), a[4], a[3], id)
  else
    redis.call('ZREM', geokey(a[1], a[5]), id)
  end
end

-- Apply a duty state only if it is at least as new as the one held (events may lag the API).
local function apply_duty(id, on_duty, ts)
  local held = tonumber(redis.call('HGET', rkey(id), 'duty_ts') or '-1')
  if held > tonumber(ts) then return 0 end
  redis.call('HSET', rkey(id), 'on_duty', on_duty, 'duty_ts', ts)
  if on_duty == '1' then redis.call('HDEL', rkey(id), 'revoked') end
  return 1
end

local ops = {}

-- ARGV: (id, kind, skills, travel_mode, on_duty, duty_ts)*
function ops.upsert()
  for i = 3, #ARGV, 6 do
    local id = ARGV[i]
    -- A changed kind or travel mode moves the responder to another GEO key.
    local old = redis.call('HMGET', rkey(id), 'kind', 'travel_mode')
    if old[1] and (old[1] ~= ARGV[i + 1] or old[2] ~= ARGV[i + 3]) then
      redis.call('ZREM', geokey(old[1], old[2]), id)
    end
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

-- ARGV: stale_cutoff, pings. The pings come packed in one string, one "id lat lon ts"
-- line each: one argument instead of four per ping keeps the client's packing cheap.
-- Returns per ping: 1 indexed, 0 older than the held one (ignored), -1 unknown responder.
function ops.pings()
  local cutoff = tonumber(ARGV[3])
  local out = {}
  for id, lat, lon, tstr in string.gmatch(ARGV[4], '(%S+) (%S+) (%S+) (%S+)') do
    local ts = tonumber(tstr)
    local key = rkey(id)
    local a = redis.call('HMGET', key, 'kind', 'ts', 'on_duty', 'travel_mode')
    if not a[1] then
      out[#out + 1] = -1
    elseif a[2] and tonumber(a[2]) >= ts then
      out[#out + 1] = 0
    else
      redis.call('HSET', key, 'lat', lat, 'lon', lon, 'ts', tstr)
      redis.call('ZADD', SEEN, ts, id)
      if indexable(lat) then redis.call('GEOADD', PLACED, lon, lat, id) end
      if a[3] == '1' and ts >= cutoff and indexable(lat)
          and redis.call('HGET', STATUS, id) == 'free' then
        redis.call('GEOADD', geokey(a[1], a[4]), lon, lat, id)
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

-- Parses "n, values..." at ARGV[i]; returns the values and the index after them.
local function counted(i)
  local values = {}
  for j = 1, tonumber(ARGV[i]) do values[j] = ARGV[i + j] end
  return values, i + #values + 1
end

-- Every op keeps the GEO keys to on-duty free responders only, so searches need not
-- re-check that (the claim does, atomically); they check freshness, skills and exclusions.
local function eligible(id, cutoff, wanted, excluded)
  if excluded[id] or tonumber(redis.call('ZSCORE', SEEN, id) or '-1') < cutoff then
    return false
  end
  if #wanted == 0 then return true end
  return has_all(redis.call('HGET', rkey(id), 'skills'), wanted)
end

local function search_args()
  local lon, lat, cutoff = ARGV[3], ARGV[4], tonumber(ARGV[5])
  local skills, i = counted(6)
  local wanted = {}
  for j, s in ipairs(skills) do wanted[j] = '|' .. s .. '|' end
  local excl, k = counted(i)
  local excluded = {}
  for _, id in ipairs(excl) do excluded[id] = true end
  return lon, lat, cutoff, wanted, excluded, #excl, k
end

-- ARGV: lon, lat, stale_cutoff, nskills, skills..., nexclude, exclude...,
-- (kind, travel_mode, radius_m, count)*. Per group (one GEO key), the `count` nearest
-- eligible responders within its radius, nearest first: a flat reply of
-- {kind, travel_mode, more, n, id1, distance1, ..., idn, distancen} per group, where
-- more = 1 when the count was reached (the key may hold more eligible ones farther out).
function ops.nearest()
  local lon, lat, cutoff, wanted, excluded, nexcl, i = search_args()
  local out = {}
  for g = i, #ARGV, 4 do
    local kind, mode, radius, count = ARGV[g], ARGV[g + 1], ARGV[g + 2], tonumber(ARGV[g + 3])
    -- Ask Redis for a few more than needed, since stale, unskilled or excluded ones are
    -- skipped; if that was not enough and the radius holds more, ask again for more.
    local fetch = count + math.min(nexcl, 64) + 8
    local found = {}
    while true do
      found = {}
      local hits = redis.call('GEOSEARCH', geokey(kind, mode), 'FROMLONLAT', lon, lat,
        'BYRADIUS', radius, 'm', 'ASC', 'COUNT', fetch, 'WITHDIST')
      for _, hit in ipairs(hits) do
        if eligible(hit[1], cutoff, wanted, excluded) then
          found[#found + 1] = hit
          if #found == count then break end
        end
      end
      if #found == count or #hits < fetch then break end
      fetch = fetch * 4
    end
    out[#out + 1] = kind
    out[#out + 1] = mode
    out[#out + 1] = (#found == count) and 1 or 0
    out[#out + 1] = #found
    for _, hit in ipairs(found) do
      out[#out + 1] = hit[1]
      out[#out + 1] = hit[2]
    end
  end
  return out
end

-- Books the first of ``ids`` that is on duty, free, positioned and fresh: status offered,
-- held for the incident until the deadline. A repeat by the same incident gets the same
-- responder back. Returns {id, kind, travel_mode, lat, lon} and its place in ``ids``, or nil.
local function book(incident, deadline, cutoff, ids)
  for i, id in ipairs(ids) do
    local a = redis.call('HMGET', rkey(id), 'kind', 'on_duty', 'lat', 'lon', 'travel_mode')
    if a[1] and a[2] == '1' and a[3] then
      local status = redis.call('HGET', STATUS, id)
      local seen = tonumber(redis.call('ZSCORE', SEEN, id) or '-1')
      if status == 'free' and seen >= cutoff then
        redis.call('HSET', STATUS, id, 'offered')
        redis.call('HSET', HOLDER, id, incident)
        redis.call('ZADD', HOLDS, deadline, id)
        redis.call('ZREM', geokey(a[1], a[5]), id)
        return {id, a[1], a[5], a[3], a[4]}, i
      end
      if status == 'offered' and redis.call('HGET', HOLDER, id) == incident then
        redis.call('ZADD', HOLDS, deadline, id)
        return {id, a[1], a[5], a[3], a[4]}, i
      end
    end
  end
  return nil, 0
end

-- ARGV: incident, hold_deadline, stale_cutoff, candidate ids in ranked order.
-- Returns {id, kind, travel_mode, lat, lon} or false.
function ops.claim()
  local ids = {}
  for i = 6, #ARGV do ids[#ids + 1] = ARGV[i] end
  local row = book(ARGV[3], ARGV[4], tonumber(ARGV[5]), ids)
  return row or false
end

-- What the trace needs to know of one responder, at the moment of the claim:
-- id, distance (or ''), kind, travel_mode, skills, on_duty, status, last ping, revoked.
local function describe(out, id, dist)
  local a = redis.call('HMGET', rkey(id), 'kind', 'travel_mode', 'skills', 'on_duty', 'revoked')
  out[#out + 1] = id
  out[#out + 1] = dist
  out[#out + 1] = a[1] or ''
  out[#out + 1] = a[2] or ''
  out[#out + 1] = a[3] or ''
  out[#out + 1] = a[4] or '0'
  out[#out + 1] = redis.call('HGET', STATUS, id) or ''
  out[#out + 1] = redis.call('ZSCORE', SEEN, id) or ''
  out[#out + 1] = a[5] or ''
end

-- A claim that also says what it saw. ARGV: incident, hold_deadline, stale_cutoff, lon,
-- lat, passed_max, n, (candidate id, trace radius)*n. Books as ``claim`` does; then
-- describes every candidate and up to ``passed_max`` other placed responders within the
-- booked candidate's trace radius, nearest first. Returns {booked (5 fields or empty
-- strings), n, described candidates..., m, described others...}, 9 fields per description.
function ops.claim_traced()
  local lon, lat, passed_max, n = ARGV[6], ARGV[7], tonumber(ARGV[8]), tonumber(ARGV[9])
  local ids, radii, listed = {}, {}, {}
  for j = 1, n do
    ids[j] = ARGV[8 + 2 * j]
    radii[j] = ARGV[9 + 2 * j]
    listed[ids[j]] = true
  end
  -- Describe the candidates before booking, so a skipped one shows why it was skipped.
  local cands = {}
  for _, id in ipairs(ids) do describe(cands, id, '') end
  local row, at = book(ARGV[3], ARGV[4], tonumber(ARGV[5]), ids)
  local out = row or {'', '', '', '', ''}
  out[#out + 1] = n
  for _, v in ipairs(cands) do out[#out + 1] = v end
  local others = {}
  if row then
    local hits = redis.call('GEOSEARCH', PLACED, 'FROMLONLAT', lon, lat, 'BYRADIUS',
      radii[at], 'm', 'ASC', 'COUNT', passed_max + n, 'WITHDIST')
    local m = 0
    for _, hit in ipairs(hits) do
      if not listed[hit[1]] and m < passed_max then
        describe(others, hit[1], hit[2])
        m = m + 1
      end
    end
    out[#out + 1] = m
  else
    out[#out + 1] = 0
  end
  for _, v in ipairs(others) do out[#out + 1] = v end
  return out
end

-- ARGV: id. Marks a revoked responder, so a trace can say why they were not asked.
function ops.revoked()
  local id = ARGV[3]
  if redis.call('EXISTS', rkey(id)) == 0 then return 0 end
  redis.call('HSET', rkey(id), 'revoked', '1')
  return 1
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

-- ARGV: now, limit. Frees offered responders whose hold has lapsed, and busy ones that
-- dispatch stopped listing (suspect() gave them a hold; busy() would have ended it).
function ops.expire()
  local ids = redis.call('ZRANGEBYSCORE', HOLDS, '-inf', ARGV[3], 'LIMIT', 0, ARGV[4])
  local freed = 0
  for _, id in ipairs(ids) do
    redis.call('ZREM', HOLDS, id)
    local status = redis.call('HGET', STATUS, id)
    if status == 'offered' or status == 'busy' then
      redis.call('HSET', STATUS, id, 'free')
      redis.call('HDEL', HOLDER, id)
      reindex(id)
      freed = freed + 1
    end
  end
  return freed
end

-- ARGV: deadline, ids dispatch lists as booked. Every busy responder dispatch does not
-- list gets a hold lapsing at the deadline, unless a booking (busy()) ends it first.
-- Offered ones already have a hold. Returns how many were given one.
function ops.suspect()
  local keep = {}
  for i = 4, #ARGV do keep[ARGV[i]] = true end
  local n = 0
  for _, id in ipairs(redis.call('HKEYS', HOLDER)) do
    if not keep[id] and redis.call('HGET', STATUS, id) == 'busy'
        and not redis.call('ZSCORE', HOLDS, id) then
      redis.call('ZADD', HOLDS, ARGV[3], id)
      n = n + 1
    end
  end
  return n
end

-- ARGV: from (exclusive), to. Drops responders whose last ping fell stale in that window
-- from the GEO keys; the search also checks freshness, this only keeps the index lean.
function ops.unstale()
  local ids = redis.call('ZRANGEBYSCORE', SEEN, '(' .. ARGV[3], ARGV[4])
  for _, id in ipairs(ids) do
    local a = redis.call('HMGET', rkey(id), 'kind', 'travel_mode')
    if a[1] then redis.call('ZREM', geokey(a[1], a[2]), id) end
  end
  return #ids
end

return ops[op]()
