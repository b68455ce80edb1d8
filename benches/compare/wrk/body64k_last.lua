-- A 64 KiB JSON chat request with `messages` first and `model` after them (key order is the
-- client's choice; the openai Python client 3.57 writes `model` first, many hand-written clients
-- do not), so a gateway that routes by the body reads the whole prompt.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local head = '{"messages":[{"role":"user","content":"'
local tail = '"}],"model":"m","max_tokens":1}'
wrk.body = head .. string.rep("a", 65536 - #head - #tail) .. tail
