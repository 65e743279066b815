#!lua name=livecore_v1
--[[
LiveCore's Redis Functions library: every read-modify-write of deal counters,
holds and show sequence numbers happens in here, atomically.

Keys of one deal share the hash tag {deal:ID}; keys of one show share
{show:ID}, so every function touches one cluster slot.

Deal keys:  state (hash: status, reason, remaining, quantity, sold, limit,
            price_cents, currency, show_id, product_id, starts_at, ends_at,
            hold_ttl_ms), users (hash user -> units held+sold),
            holds (zset rid -> deadline ms), holddata (hash rid ->
            "qty|expires_at|status|user"), idem (hash key -> "fp\nresult").
Hold status: held -> confirming -> sold, or held -> expired | released.

Accounting, while a deal is live: remaining + units of held/confirming holds
+ sold == quantity. After it ends `remaining` is frozen; PostgreSQL settles
quantity - sold back to product stock.
]]

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function split(s)
  local out = {}
  for part in string.gmatch(s, '[^|]+') do out[#out + 1] = part end
  return out
end

-- The user id goes last and is taken verbatim: user ids come from token
-- subjects and may contain '|', which must never shift the numeric fields.
local function hold_get(holddata, rid)
  local raw = redis.call('HGET', holddata, rid)
  if not raw then return nil end
  local qty, exp, status, user = string.match(raw, '^(%d+)|(%d+)|(%a+)|(.*)$')
  return {user = user, qty = tonumber(qty), exp = tonumber(exp), status = status}
end

local function hold_set(holddata, rid, h)
  redis.call('HSET', holddata, rid, h.qty .. '|' .. h.exp .. '|' .. h.status .. '|' .. h.user)
end

-- Give a hold's units back: to the deal while it is live (after the end,
-- settlement returns them to product stock from PostgreSQL's record).
local function give_back(state, users, holds, holddata, rid, h, new_status)
  h.status = new_status
  hold_set(holddata, rid, h)
  redis.call('ZREM', holds, rid)
  redis.call('HINCRBY', users, h.user, -h.qty)
  if redis.call('HGET', state, 'status') == 'live' then
    redis.call('HINCRBY', state, 'remaining', h.qty)
  end
end

-- KEYS: state users holds holddata idem
-- ARGV: user qty rid idem_key fingerprint
-- -> {'ok', rid, qty, expires_at, remaining} | {'err', code} | {'missing'};
-- a replayed idempotent result carries a trailing 'replay'.
local function claim(keys, args)
  local state, users, holds, holddata, idem = keys[1], keys[2], keys[3], keys[4], keys[5]
  local user, qty, rid, ikey, fp = args[1], tonumber(args[2]), args[3], args[4], args[5]
  -- A zero or negative qty would hand units back to the deal: refuse it here
  -- too, whatever the caller validated.
  if not qty or qty < 1 or qty ~= math.floor(qty) then return {'err', 'invalid_qty'} end
  if ikey ~= '' then
    local prev = redis.call('HGET', idem, ikey)
    if prev then
      local sep = string.find(prev, '\n', 1, true)
      if string.sub(prev, 1, sep - 1) ~= fp then return {'err', 'idempotency_mismatch'} end
      local out = split(string.sub(prev, sep + 1))
      out[#out + 1] = 'replay'
      return out
    end
  end
  if redis.call('EXISTS', state) == 0 then return {'missing'} end
  local now = now_ms()
  local st = redis.call('HMGET', state, 'status', 'remaining', 'limit', 'ends_at', 'hold_ttl_ms')
  local result
  if st[1] ~= 'live' or now >= tonumber(st[4]) then
    result = {'err', 'deal_not_live'}
  else
    local used = tonumber(redis.call('HGET', users, user) or '0')
    if used + qty > tonumber(st[3]) then
      result = {'err', 'limit_reached'}
    elseif tonumber(st[2]) < qty then
      result = {'err', 'sold_out'}
    else
      local remaining = redis.call('HINCRBY', state, 'remaining', -qty)
      redis.call('HINCRBY', users, user, qty)
      local exp = now + tonumber(st[5])
      redis.call('ZADD', holds, exp, rid)
      hold_set(holddata, rid, {user = user, qty = qty, exp = exp, status = 'held'})
      result = {'ok', rid, tostring(qty), tostring(exp), tostring(remaining)}
    end
  end
  if ikey ~= '' then redis.call('HSET', idem, ikey, fp .. '\n' .. table.concat(result, '|')) end
  return result
end

-- KEYS: state users holds holddata ; ARGV: rid user lease_ms
-- -> {'go', qty} | {'sold', qty} | {'err', code} | {'missing'}
local function confirm_begin(keys, args)
  local state, users, holds, holddata = keys[1], keys[2], keys[3], keys[4]
  local rid, user, lease = args[1], args[2], tonumber(args[3])
  if redis.call('EXISTS', state) == 0 then return {'missing'} end
  local h = hold_get(holddata, rid)
  if not h then return {'err', 'not_found'} end
  if h.user ~= user then return {'err', 'forbidden'} end
  if h.status == 'sold' then return {'sold', tostring(h.qty)} end
  if h.status == 'expired' then return {'err', 'reservation_expired'} end
  if h.status == 'released' then return {'err', 'reservation_not_active'} end
  local now = now_ms()
  if h.status == 'held' then
    if now >= h.exp then
      give_back(state, users, holds, holddata, rid, h, 'expired')
      return {'err', 'reservation_expired'}
    end
    h.status = 'confirming'
    hold_set(holddata, rid, h)
  end
  -- The lease keeps the sweeper away while PostgreSQL records the order; a
  -- crashed confirm is settled by the sweeper asking PostgreSQL.
  redis.call('ZADD', holds, now + lease, rid)
  return {'go', tostring(h.qty)}
end

-- KEYS: state users holds holddata ; ARGV: rid user qty pg_sold
-- PostgreSQL has recorded the order of `rid`; count it as sold, once.
-- pg_sold is deals.sold right after this order's insert (0 = unknown).
-- -> {sold, quantity, ended_now}
local function confirm_finish(keys, args)
  local state, users, holds, holddata = keys[1], keys[2], keys[3], keys[4]
  local rid, user, qty, pg_sold = args[1], args[2], tonumber(args[3]), tonumber(args[4])
  -- No state: Redis lost the deal. The rebuild will read PostgreSQL, which
  -- already has this order; writing anything here would be double counting.
  if redis.call('EXISTS', state) == 0 then return {0, 0, 0} end
  local live = redis.call('HGET', state, 'status') == 'live'
  local h = hold_get(holddata, rid)
  local count = false
  if h then
    count = h.status ~= 'sold'
    if h.status == 'expired' or h.status == 'released' then
      -- The hold was given back (the confirm lease ran out while PostgreSQL
      -- was slow) yet the order committed: take its units again.
      redis.call('HINCRBY', users, h.user, h.qty)
      if live then redis.call('HINCRBY', state, 'remaining', -h.qty) end
    end
  elseif pg_sold > tonumber(redis.call('HGET', state, 'sold_base') or '0') then
    -- Redis lost the hold and was rebuilt from a PostgreSQL snapshot taken
    -- before this order committed (sold only grows, so the snapshot missed
    -- it exactly when pg_sold exceeds it): account for the units now.
    h = {user = user, qty = qty, exp = 0, status = 'confirming'}
    redis.call('HINCRBY', users, user, qty)
    if live then redis.call('HINCRBY', state, 'remaining', -qty) end
    count = true
  end
  local ended = 0
  if count then
    h.status = 'sold'
    hold_set(holddata, rid, h)
    redis.call('ZREM', holds, rid)
    local sold = redis.call('HINCRBY', state, 'sold', h.qty)
    if sold >= tonumber(redis.call('HGET', state, 'quantity')) and live then
      redis.call('HSET', state, 'status', 'ended', 'reason', 'sold_out', 'ended_at', now_ms())
      ended = 1
    end
  end
  local st = redis.call('HMGET', state, 'sold', 'quantity')
  return {tonumber(st[1]) or 0, tonumber(st[2]) or 0, ended}
end

-- KEYS: state users holds holddata ; ARGV: rid user
-- -> {'ok', remaining} | {'err', code}
local function release(keys, args)
  local state, users, holds, holddata = keys[1], keys[2], keys[3], keys[4]
  local h = hold_get(holddata, args[1])
  if not h then return {'err', 'not_found'} end
  if h.user ~= args[2] then return {'err', 'forbidden'} end
  if h.status == 'sold' or h.status == 'confirming' then return {'err', 'already_confirmed'} end
  if h.status == 'held' then
    give_back(state, users, holds, holddata, args[1], h, 'released')
  end
  return {'ok', tostring(redis.call('HGET', state, 'remaining') or '0')}
end

-- KEYS: state users holds holddata ; ARGV: max
-- Expires due holds, ends the deal at ends_at.
-- -> {ended_now, remaining, holds_left, expired_count, status, stuck_rid...}
local function sweep(keys, args)
  local state, users, holds, holddata = keys[1], keys[2], keys[3], keys[4]
  if redis.call('EXISTS', state) == 0 then return {0, 0, 0, 0, 'missing'} end
  local now = now_ms()
  local ended = 0
  local st = redis.call('HMGET', state, 'status', 'ends_at')
  if st[1] == 'live' and now >= tonumber(st[2]) then
    redis.call('HSET', state, 'status', 'ended', 'reason', 'expired', 'ended_at', now)
    ended = 1
  end
  local due = redis.call('ZRANGE', holds, '-inf', now, 'BYSCORE', 'LIMIT', 0, tonumber(args[1]))
  local expired, stuck = 0, {}
  for _, rid in ipairs(due) do
    local h = hold_get(holddata, rid)
    if not h then
      redis.call('ZREM', holds, rid)
    elseif h.status == 'held' then
      give_back(state, users, holds, holddata, rid, h, 'expired')
      expired = expired + 1
    elseif h.status == 'confirming' then
      stuck[#stuck + 1] = rid
    else
      redis.call('ZREM', holds, rid)
    end
  end
  local out = {ended, tonumber(redis.call('HGET', state, 'remaining')),
               redis.call('ZCARD', holds), expired, redis.call('HGET', state, 'status')}
  for _, rid in ipairs(stuck) do out[#out + 1] = rid end
  return out
end

-- KEYS: state users holds holddata ; ARGV: rid  (the confirm lease ran out and
-- PostgreSQL has no order: the hold is void)
local function expire_stuck(keys, args)
  local h = hold_get(keys[4], args[1])
  if h and h.status == 'confirming' then
    give_back(keys[1], keys[2], keys[3], keys[4], args[1], h, 'expired')
    return 1
  end
  return 0
end

-- KEYS: state ; ARGV: reason -> 1 when this call ended the deal
local function end_deal(keys, args)
  if redis.call('HGET', keys[1], 'status') == 'live' then
    redis.call('HSET', keys[1], 'status', 'ended', 'reason', args[1], 'ended_at', now_ms())
    return 1
  end
  return 0
end

-- KEYS: state users holds holddata ; ARGV: n field value ... (n args), then
-- user units ... (units sold per user, from PostgreSQL)
-- -> 1 when initialised, 0 when it existed (so concurrent rebuilds after
-- Redis data loss cannot double-count).
local function init_deal(keys, args)
  if redis.call('EXISTS', keys[1]) == 1 then return 0 end
  -- Without the state, whatever is left of the other keys (partial loss,
  -- eviction) is void: a leftover hold given back later would mint units.
  redis.call('DEL', keys[2], keys[3], keys[4])
  local n = tonumber(args[1])
  redis.call('HSET', keys[1], unpack(args, 2, n + 1))
  for i = n + 2, #args, 2 do
    redis.call('HSET', keys[2], args[i], args[i + 1])
  end
  return 1
end

-- KEYS: seq stream ; ARGV: payload_without_closing_brace maxlen seq_floor
-- Appends `,"seq":N}` so the stored bytes are the final frame text.
local function publish(keys, args)
  if redis.call('EXISTS', keys[1]) == 0 and tonumber(args[3]) > 0 then
    -- Redis lost its data: never hand out a seq a client has already seen.
    redis.call('SET', keys[1], args[3])
  end
  local seq = redis.call('INCR', keys[1])
  local data = args[1] .. ',"seq":' .. seq .. '}'
  redis.call('XADD', keys[2], 'MAXLEN', '~', args[2], seq .. '-0', 'd', data)
  return {seq, data}
end

redis.register_function('lc_claim', claim)
redis.register_function('lc_confirm_begin', confirm_begin)
redis.register_function('lc_confirm_finish', confirm_finish)
redis.register_function('lc_release', release)
redis.register_function('lc_sweep', sweep)
redis.register_function('lc_expire_stuck', expire_stuck)
redis.register_function('lc_end_deal', end_deal)
redis.register_function('lc_init_deal', init_deal)
redis.register_function('lc_publish', publish)
