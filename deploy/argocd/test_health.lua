-- Runs health.lua the way Argo CD does (a chunk with a global `obj`, returning {status, message})
-- against sample ModelRollout objects, and prints one line per sample: name TAB status TAB message.
-- Usage: lua5.4 deploy/argocd/test_health.lua deploy/argocd/health.lua
-- The expected mapping is asserted by tests/e2e/deploy.rs.
local script = arg[1] or "health.lua"

local function rollout(status, generation)
  return {
    apiVersion = "rollgate.dev/v1alpha1",
    kind = "ModelRollout",
    metadata = { name = "chat-small", namespace = "rollgate-prod", generation = generation or 1 },
    spec = { model = "chat-small" },
    status = status,
  }
end

local function cond(ready, reconciling, stalled, reason, message)
  return {
    { type = "Ready", status = ready, reason = reason, lastTransitionTime = "2026-11-26T10:00:00Z" },
    { type = "Reconciling", status = reconciling, reason = reason, lastTransitionTime = "2026-11-26T10:00:00Z" },
    { type = "Stalled", status = stalled, reason = reason, message = message, lastTransitionTime = "2026-11-26T10:00:00Z" },
  }
end

local function phase(p, extra)
  local st = {
    observedGeneration = 1,
    observedRevision = "3f2a9c1",
    phase = p,
    candidate = "v2",
    weight = "0%",
    conditions = cond("False", "True", "False", p),
  }
  for k, v in pairs(extra or {}) do
    st[k] = v
  end
  return rollout(st)
end

local samples = {
  { "no-status", rollout(nil) },
  { "no-candidate", rollout({ observedGeneration = 1, observedRevision = "3f2a9c1", weight = "0%",
    conditions = cond("True", "False", "False", "Current") }) },
  { "Idle", rollout({ observedGeneration = 1, observedRevision = "3f2a9c1", phase = "Idle", weight = "0%",
    conditions = cond("True", "False", "False", "Current") }) },
  { "Deploy", phase("Deploy") },
  { "ValidateHealth", phase("ValidateHealth") },
  { "Shadow", phase("Shadow", { mirror = "20%" }) },
  { "Canary", phase("Canary", { step = 1, weight = "10%" }) },
  { "Promote", phase("Promote", { weight = "100%" }) },
  { "Full", phase("Full", { weight = "100%", conditions = cond("True", "False", "False", "Current") }) },
  { "Rollback", phase("Rollback", { reason = "gate latency_p99 failed: 2.4s > 2s" }) },
  { "Previous", phase("Previous", { reason = "gate error_rate failed" }) },
  { "paused", phase("Canary", { step = 2, weight = "25%", paused = { by = "alice", reason = "incident 42" } }) },
  { "paused-bool", phase("Shadow", { paused = true }) },
  { "stalled", phase("Canary", { step = 1, weight = "10%",
    conditions = cond("False", "False", "True", "InvalidConfig",
      "revision 9e8d7c6: models[0].weight: 120% is above 100%") }) },
  { "stale-generation", rollout({ observedGeneration = 1, phase = "Full", weight = "100%" }, 2) },
  { "unknown-phase", phase("Sideways") },
}

local function run(o)
  local env = setmetatable({ obj = o }, { __index = _G })
  local chunk, err
  if setfenv ~= nil then -- Lua 5.1
    chunk, err = loadfile(script)
    if chunk ~= nil then
      setfenv(chunk, env)
    end
  else
    chunk, err = loadfile(script, "t", env)
  end
  if chunk == nil then
    error("cannot load " .. script .. ": " .. tostring(err))
  end
  return chunk()
end

local failed = false
for _, s in ipairs(samples) do
  local ok, hs = pcall(run, s[2])
  if not ok then
    io.stderr:write(s[1] .. ": health check raised: " .. tostring(hs) .. "\n")
    failed = true
  elseif type(hs) ~= "table" or type(hs.status) ~= "string" then
    io.stderr:write(s[1] .. ": health check returned no status table\n")
    failed = true
  else
    print(s[1] .. "\t" .. hs.status .. "\t" .. tostring(hs.message or ""))
  end
end
if failed then
  os.exit(1)
end
