-- A 64 KiB JSON request body, `model` first.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local head = '{"model":"m","max_tokens":1,"input":"'
local tail = '"}'
wrk.body = head .. string.rep("a", 65536 - #head - #tail) .. tail
