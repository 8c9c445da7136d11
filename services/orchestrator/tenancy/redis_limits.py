"""The Redis limits backend: the same semantics as InProcessLimiter, with every admission and settlement one Lua
script, so concurrent replicas see each other's charges atomically."""

from __future__ import annotations

import math

import redis.asyncio as redis

from services.orchestrator.tenancy.limits import (
    LEASE_TTL_S,
    NEVER,
    Ask,
    Bucket,
    BucketState,
    Lease,
    Quota,
    Settlement,
    Verdict,
)

KEY_PREFIX = "sluice:rl:"

# A bucket is a hash {level, at}; a quota a counter that expires when its window ends; a lease set a sorted set of
# lease ids scored by expiry. Numbers come back as strings: Redis would truncate Lua floats to integers.
_LEVEL = """
local function level(key, limit, period, now)
  local state = redis.call('HMGET', key, 'level', 'at')
  local lvl, at = tonumber(state[1]), tonumber(state[2])
  if lvl == nil then return limit end
  return math.min(limit, lvl + math.max(0, now - at) * limit / period)
end
"""

_ADMIT = _LEVEL + """
local now, nb, nq, nl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local lease_id, lease_ttl = ARGV[5], tonumber(ARGV[6])
local a = 7
local levels, holders = {}, {}
local refused, retry = 0, 0
for i = 1, nb do
  local limit, period, cost = tonumber(ARGV[a]), tonumber(ARGV[a+1]), tonumber(ARGV[a+2])
  levels[i] = level(KEYS[i], limit, period, now)
  if refused == 0 and levels[i] < cost then
    refused = i
    if cost > limit then retry = -1 else retry = (cost - levels[i]) * period / limit end
  end
  a = a + 3
end
for j = 1, nq do
  local limit, cost, resets_at = tonumber(ARGV[a]), tonumber(ARGV[a+1]), tonumber(ARGV[a+2])
  local used = tonumber(redis.call('GET', KEYS[nb+j]) or '0')
  if refused == 0 and used + cost > limit then
    refused = nb + j
    if cost > limit then retry = -1 else retry = math.max(1, resets_at - now) end
  end
  a = a + 3
end
for k = 1, nl do
  local key = KEYS[nb+nq+k]
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  holders[k] = redis.call('ZCARD', key)
  if refused == 0 and holders[k] >= tonumber(ARGV[a]) then refused = nb + nq + k; retry = 1 end
  a = a + 1
end
if refused == 0 then
  a = 7
  for i = 1, nb do
    local period, cost = tonumber(ARGV[a+1]), tonumber(ARGV[a+2])
    levels[i] = levels[i] - cost
    redis.call('HSET', KEYS[i], 'level', tostring(levels[i]), 'at', tostring(now))
    redis.call('EXPIRE', KEYS[i], math.ceil(period * 2))
    a = a + 3
  end
  for j = 1, nq do
    local cost, resets_at = tonumber(ARGV[a+1]), tonumber(ARGV[a+2])
    redis.call('INCRBY', KEYS[nb+j], cost)
    redis.call('EXPIREAT', KEYS[nb+j], math.ceil(resets_at))
    a = a + 3
  end
  for k = 1, nl do
    redis.call('ZADD', KEYS[nb+nq+k], now + lease_ttl, lease_id)
    redis.call('EXPIRE', KEYS[nb+nq+k], math.ceil(lease_ttl))
  end
end
local out = {refused, tostring(retry)}
for i = 1, nb do out[#out+1] = tostring(levels[i]) end
for k = 1, nl do out[#out+1] = holders[k] end
return out
"""

_SETTLE = _LEVEL + """
local now, nb, nq, nl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local lease_id = ARGV[5]
local a = 6
for i = 1, nb do
  local limit, period, amount = tonumber(ARGV[a]), tonumber(ARGV[a+1]), tonumber(ARGV[a+2])
  local lvl = math.min(limit, level(KEYS[i], limit, period, now) + amount)
  redis.call('HSET', KEYS[i], 'level', tostring(lvl), 'at', tostring(now))
  redis.call('EXPIRE', KEYS[i], math.ceil(period * 2))
  a = a + 3
end
for j = 1, nq do
  local amount = tonumber(ARGV[a])
  if redis.call('EXISTS', KEYS[nb+j]) == 1 then
    local used = redis.call('DECRBY', KEYS[nb+j], amount)
    if used < 0 then redis.call('INCRBY', KEYS[nb+j], -used) end
  end
  a = a + 1
end
for k = 1, nl do redis.call('ZREM', KEYS[nb+nq+k], lease_id) end
return 1
"""

_PEEK = _LEVEL + """
local now = tonumber(ARGV[1])
local out = {}
for i = 1, #KEYS do
  out[i] = tostring(level(KEYS[i], tonumber(ARGV[2*i]), tonumber(ARGV[2*i+1]), now))
end
return out
"""


def _state(bucket: Bucket, level: float) -> BucketState:
    return BucketState(bucket.limit, level, max(0.0, (bucket.limit - level) / bucket.rate))


class RedisLimiter:
    def __init__(self, url: str, prefix: str = KEY_PREFIX) -> None:
        self._redis = redis.from_url(url)
        self._prefix = prefix
        self._admit = self._redis.register_script(_ADMIT)
        self._settle = self._redis.register_script(_SETTLE)
        self._peek = self._redis.register_script(_PEEK)

    def _key(self, key: str) -> str:
        return self._prefix + key

    async def admit(self, ask: Ask, now: float) -> Verdict:
        keys = [self._key(b.key) for b, _ in ask.buckets] + [self._key(q.key) for q, _ in ask.quotas] + \
               [self._key(lease.key) for lease in ask.leases]
        args: list[object] = [now, len(ask.buckets), len(ask.quotas), len(ask.leases), ask.lease_id, LEASE_TTL_S]
        for bucket, cost in ask.buckets:
            args += [bucket.limit, bucket.period_s, cost]
        for quota, cost in ask.quotas:
            args += [quota.limit, cost, quota.resets_at]
        for lease in ask.leases:
            args.append(lease.limit)
        reply = await self._admit(keys=keys, args=args)
        refused, retry = int(reply[0]), float(reply[1])
        levels = [float(v) for v in reply[2:2 + len(ask.buckets)]]
        holders = {lease.key: int(n) for lease, n in zip(ask.leases, reply[2 + len(ask.buckets):], strict=True)}
        states = {b.key: _state(b, level) for (b, _), level in zip(ask.buckets, levels, strict=True)}
        if refused == 0:
            return Verdict(True, states, holders=holders)
        limits: list[Bucket | Quota | Lease] = [b for b, _ in ask.buckets] + [q for q, _ in ask.quotas] + \
            list(ask.leases)
        return Verdict(False, states, limits[refused - 1], NEVER if retry < 0 else retry, holders)

    async def settle(self, settlement: Settlement, now: float) -> None:
        buckets = [(limit, amount) for limit, amount in settlement.refunds if isinstance(limit, Bucket)]
        quotas = [(limit, amount) for limit, amount in settlement.refunds if isinstance(limit, Quota)]
        keys = [self._key(b.key) for b, _ in buckets] + [self._key(q.key) for q, _ in quotas] + \
               [self._key(lease.key) for lease in settlement.releases]
        args: list[object] = [now, len(buckets), len(quotas), len(settlement.releases), settlement.lease_id]
        for bucket, amount in buckets:
            args += [bucket.limit, bucket.period_s, amount]
        for _, amount in quotas:
            args.append(int(math.floor(amount)))
        if keys:
            await self._settle(keys=keys, args=args)

    async def peek(self, buckets: list[Bucket], now: float) -> dict[str, BucketState]:
        if not buckets:
            return {}
        args: list[object] = [now]
        for bucket in buckets:
            args += [bucket.limit, bucket.period_s]
        reply = await self._peek(keys=[self._key(b.key) for b in buckets], args=args)
        return {b.key: _state(b, float(level)) for b, level in zip(buckets, reply, strict=True)}

    async def close(self) -> None:
        await self._redis.aclose()
