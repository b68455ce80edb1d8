-- Argo CD health check for rollgate.dev/ModelRollout (resource.customizations.health.rollgate.dev_ModelRollout).
-- Reads the kstatus-shaped .status that rollgate publishes; Lua 5.1 as Argo CD's gopher-lua runs it.
local hs = {}

local function set(status, message)
  hs.status = status
  hs.message = message
  return hs
end

-- A JSON null may arrive as nil or as a userdata/empty value; "set" means a real value.
local function present(v)
  if v == nil or v == false or v == "" then
    return false
  end
  if type(v) == "table" and next(v) == nil then
    return false
  end
  return true
end

local function describe(st)
  local parts = {}
  if present(st.phase) then
    local phase = st.phase
    if st.phase == "Canary" and st.step ~= nil then
      phase = phase .. " step " .. tostring(st.step)
    end
    table.insert(parts, phase)
  end
  if present(st.candidate) then
    local c = "candidate " .. tostring(st.candidate)
    if present(st.weight) then
      c = c .. " at " .. tostring(st.weight)
    end
    table.insert(parts, c)
  end
  if present(st.observedRevision) then
    table.insert(parts, "revision " .. tostring(st.observedRevision))
  end
  if present(st.reason) then
    table.insert(parts, tostring(st.reason))
  end
  return table.concat(parts, ", ")
end

if obj.status == nil then
  return set("Progressing", "waiting for rollgate")
end
local st = obj.status

-- An invalid config (Stalled=True) outranks everything: rollgate keeps the last good one.
if st.conditions ~= nil then
  for _, c in ipairs(st.conditions) do
    if c.type == "Stalled" and c.status == "True" then
      local msg = "Stalled"
      if present(c.reason) then
        msg = msg .. " (" .. tostring(c.reason) .. ")"
      end
      if present(c.message) then
        msg = msg .. ": " .. tostring(c.message)
      end
      return set("Degraded", msg)
    end
  end
end

if present(st.paused) then
  local msg = "paused"
  if type(st.paused) == "table" and present(st.paused.reason) then
    msg = msg .. ": " .. tostring(st.paused.reason)
  end
  local d = describe(st)
  if d ~= "" then
    msg = msg .. " (" .. d .. ")"
  end
  return set("Suspended", msg)
end

-- Status written for an older spec: not judged yet.
if obj.metadata ~= nil and obj.metadata.generation ~= nil and st.observedGeneration ~= nil
    and st.observedGeneration < obj.metadata.generation then
  return set("Progressing", "waiting for rollgate to observe generation " .. tostring(obj.metadata.generation))
end

local phase = st.phase
if phase == nil or phase == "" then
  if not present(st.candidate) then
    return set("Healthy", "no candidate")
  end
  return set("Progressing", "waiting for rollgate")
end
if phase == "Full" or phase == "Idle" then
  return set("Healthy", describe(st))
end
if phase == "Deploy" or phase == "ValidateHealth" or phase == "Shadow" or phase == "Canary" or phase == "Promote" then
  return set("Progressing", describe(st))
end
if phase == "Rollback" or phase == "Previous" then
  return set("Degraded", "rolled back: " .. describe(st))
end
return set("Unknown", "unknown phase " .. tostring(phase))
