"""The Lua scripts of the Redis tenant budget (``hooks/redis_budget.py``): each one atomic on the server
and timed by the server's clock. KEYS are the budget's keys (``redis_budget.keys``) named, in order, by
the ``*_KEYS`` beside each script; ARGV as each script's comment says; every key a script writes expires.
"""

from __future__ import annotations

# The acquire and rate-limited scripts start with it: the server's time, and a holder kept until
# ``until_ms`` (or later, if it already holds longer) and a window after; the set expires with its last
# holder. Returns how many hold.
_HOLD = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local function hold(key, holder, until_ms, window)
  local held = tonumber(redis.call('ZSCORE', key, holder))
  if held ~= nil and held > until_ms then until_ms = held end
  redis.call('ZADD', key, until_ms, holder)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  local keep = math.ceil(until_ms - now + window) + 1000
  if redis.call('PTTL', key) < keep then redis.call('PEXPIRE', key, keep) end
  return redis.call('ZCARD', key)
end
"""

ACQUIRE_KEYS = ("pause", "tat", "learned", "sent", "seq", "holders")
# ARGV: cap (0: none), counted (0/1), sent window (ms), not before (ms from now: slots this task took on its
# own while Redis was down come first), holder id, holder window (ms), re-take (1: a slot taken again for
# a request already counted in ``sent``; optional). Returns {paused_ms, wait_ms,
# rate_milli, learned, holders}. A holder's score is when it sends (its slot, or the end of the pause it
# met), so a task queued far ahead, or waiting out a pause, still counts until then and a window after.
ACQUIRE = (
    _HOLD
    + """
local window = tonumber(ARGV[6])
local cap = tonumber(ARGV[1])
local learned = tonumber(redis.call('HGET', KEYS[3], 'rate'))
local rate = learned
if cap > 0 and (rate == nil or rate > cap) then rate = cap end
local rate_milli = rate and math.floor(rate * 1000) or 0
local learned_flag = learned and 1 or 0
local paused = redis.call('PTTL', KEYS[1])
if paused > 0 then
  if ARGV[2] == '0' then return {paused, 0, 0, 0, 0} end
  return {paused, 0, rate_milli, learned_flag, hold(KEYS[6], ARGV[5], now + paused, window)}
end
if ARGV[2] == '0' then return {0, 0, 0, 0, 0} end
if ARGV[7] ~= '1' then
  local seq = redis.call('INCR', KEYS[5])
  redis.call('PEXPIRE', KEYS[5], 10000)
  redis.call('ZADD', KEYS[4], now, seq)
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - tonumber(ARGV[3]))
  redis.call('PEXPIRE', KEYS[4], 10000)
end
if rate == nil then return {0, 0, 0, 0, hold(KEYS[6], ARGV[5], now, window)} end
local interval = 1000 / rate
local tat = tonumber(redis.call('GET', KEYS[2]) or '0')
local slot = math.max(tat, now + tonumber(ARGV[4]))
local ttl = math.ceil(slot - now + interval) + 1000
redis.call('SET', KEYS[2], string.format('%.3f', slot + interval), 'PX', ttl)
return {0, math.floor(slot - now), rate_milli, learned_flag, hold(KEYS[6], ARGV[5], slot, window)}
"""
)

RATE_LIMITED_KEYS = ("pause", "tat", "learned", "sent", "holders")
# ARGV: pause (ms), cap (0: none), factor, min rate, min samples, window (ms), ttl (ms), step fraction,
# holder id, holder window (ms). Returns {cut (0/1), rate_milli, holders}: the rate is cut once per
# pause (the first 429 of an episode). The task that met the 429 holds until the pause ends.
RATE_LIMITED = (
    _HOLD
    + """
local pause = tonumber(ARGV[1])
local holders = hold(KEYS[5], ARGV[9], now + pause, tonumber(ARGV[10]))
local current = redis.call('PTTL', KEYS[1])
if current >= pause then return {0, 0, holders} end
redis.call('SET', KEYS[1], '1', 'PX', math.max(1, math.ceil(pause)))
if current > 0 then return {0, 0, holders} end
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - tonumber(ARGV[6]))
local sent = redis.call('ZCARD', KEYS[4])
if sent < tonumber(ARGV[5]) then return {0, 0, holders} end
local cap = tonumber(ARGV[2])
local rate = tonumber(redis.call('HGET', KEYS[3], 'rate'))
if cap > 0 and (rate == nil or rate > cap) then rate = cap end
local sending = sent * 1000 / tonumber(ARGV[6])
if rate ~= nil and rate < sending then sending = rate end
local new = math.max(tonumber(ARGV[4]), sending * tonumber(ARGV[3]))
if cap > 0 and new > cap then new = cap end
local step = math.max(new * tonumber(ARGV[8]), 0.01)
redis.call('HSET', KEYS[3], 'rate', string.format('%.4f', new), 'step', string.format('%.5f', step),
    'last', string.format('%.3f', now + pause))
redis.call('PEXPIRE', KEYS[3], tonumber(ARGV[7]))
return {1, math.floor(new * 1000), holders}
"""
)

SUCCEEDED_KEYS = ("learned",)
# ARGV: cap (0: none), ttl (ms). Additive increase: step per minute of successful sending (at most one
# second counted per call, so idle time does not count). Returns the rate (milli) or 0 when none.
SUCCEEDED = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local rate = tonumber(redis.call('HGET', KEYS[1], 'rate'))
if rate == nil then return 0 end
local step = tonumber(redis.call('HGET', KEYS[1], 'step')) or 0.01
local last = tonumber(redis.call('HGET', KEYS[1], 'last')) or now
local seconds = math.min(math.max(now - last, 0), 1000) / 1000
if seconds <= 0 then return math.floor(rate * 1000) end
rate = rate + step * seconds / 60
local cap = tonumber(ARGV[1])
if cap > 0 and rate > cap then rate = cap end
redis.call('HSET', KEYS[1], 'rate', string.format('%.4f', rate), 'last', string.format('%.3f', now))
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
return math.floor(rate * 1000)
"""
