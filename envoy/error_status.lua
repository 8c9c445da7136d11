-- Sluice edge: OpenAI-shaped errors from the orchestrator's gRPC answers.
--
-- 1. The OpenAI facade answers errors with gRPC OK plus an HttpBody holding {"error": {...}} and the initial-metadata
--    header `x-http-status: <code>` (optionally `retry-after`). The transcoder turns that metadata into a response
--    header; here it becomes `:status` and is removed.
-- 2. A real gRPC error status (the service crashed, aborted, or is down behind a live socket) reaches us as the
--    transcoder's `convert_grpc_status` body {"code":N,"message":"...","details":[...]}; it is rewritten into
--    {"error": {"message","type","param","code"}} keeping the HTTP status the transcoder chose.
-- Native gRPC responses are left alone (a gRPC client needs 200 + grpc-status). Envoy's own replies (404 unknown path,
-- 413, 429, 503 upstream down) are reshaped by local_reply_config in the bootstrap, not here.
-- 3. On the way in, a URL whose percent-escapes decode to invalid UTF-8 (`/v1/models/%FF`) is refused with a 400:
--    the transcoder would bind those bytes into a proto string field, which the gRPC server cannot parse (a 500).

local GRPC_ERRORS = {
  [1] = {"server_error", "cancelled"},
  [2] = {"server_error", "unknown"},
  [3] = {"invalid_request_error", "invalid_argument"},
  [4] = {"server_error", "timeout"},
  [5] = {"invalid_request_error", "not_found"},
  [6] = {"invalid_request_error", "already_exists"},
  [7] = {"permission_error", "permission_denied"},
  [8] = {"rate_limit_exceeded", "resource_exhausted"},
  [9] = {"invalid_request_error", "failed_precondition"},
  [10] = {"server_error", "aborted"},
  [11] = {"invalid_request_error", "out_of_range"},
  [12] = {"invalid_request_error", "unimplemented"},
  [13] = {"server_error", "internal_error"},
  [14] = {"server_error", "service_unavailable"},
  [15] = {"server_error", "data_loss"},
  [16] = {"authentication_error", "unauthenticated"},
}

local function is_grpc(content_type)
  return string.sub(content_type, 1, 16) == "application/grpc"
end

-- True when `text` is well-formed UTF-8 as protobuf requires: no stray continuation bytes, overlong forms,
-- surrogates (U+D800-U+DFFF) or code points past U+10FFFF.
local function valid_utf8(text)
  local i, n = 1, #text
  while i <= n do
    local c = string.byte(text, i)
    local len
    if c < 0x80 then
      len = 1
    elseif c >= 0xC2 and c <= 0xDF then
      len = 2
    elseif c >= 0xE0 and c <= 0xEF then
      len = 3
    elseif c >= 0xF0 and c <= 0xF4 then
      len = 4
    else
      return false
    end
    if i + len - 1 > n then
      return false
    end
    for j = i + 1, i + len - 1 do
      local b = string.byte(text, j)
      if b < 0x80 or b > 0xBF then
        return false
      end
    end
    local b2 = string.byte(text, i + 1)
    if (c == 0xE0 and b2 < 0xA0) or (c == 0xED and b2 > 0x9F) or (c == 0xF0 and b2 < 0x90)
        or (c == 0xF4 and b2 > 0x8F) then
      return false
    end
    i = i + len
  end
  return true
end

function envoy_on_request(request_handle)
  local headers = request_handle:headers()
  local path = headers:get(":path") or ""
  if string.find(path, "%", 1, true) == nil or is_grpc(headers:get("content-type") or "") then
    return
  end
  local decoded = string.gsub(path, "%%(%x%x)", function(hex) return string.char(tonumber(hex, 16)) end)
  if not valid_utf8(decoded) then
    -- local_reply_config wraps this text into {"error": {"message", "type", "param", "code"}}.
    request_handle:respond({[":status"] = "400", ["content-type"] = "text/plain"},
      "The URL holds percent-escapes that do not decode to valid UTF-8.")
  end
end

function envoy_on_response(response_handle)
  local headers = response_handle:headers()
  local content_type = headers:get("content-type") or ""
  if is_grpc(content_type) then
    headers:remove("x-http-status")
    return
  end

  local wanted = headers:get("x-http-status")
  if wanted ~= nil then
    headers:remove("x-http-status")
    local code = tonumber(wanted)
    if code ~= nil and code == math.floor(code) and code >= 200 and code <= 599 then
      headers:replace(":status", string.format("%d", code))
    end
    return
  end

  local status = tonumber(headers:get(":status") or "200")
  if status < 400 or string.sub(content_type, 1, 16) ~= "application/json" then
    return
  end
  local body = response_handle:body()
  if body == nil then
    return
  end
  local text = body:getBytes(0, body:length())
  local grpc_code, message = string.match(text, '^{"code":(%d+),"message":"(.-)","details":')
  if grpc_code == nil then
    return
  end
  local kind = GRPC_ERRORS[tonumber(grpc_code)] or {"server_error", "internal_error"}
  local rewritten = string.format(
    '{"error":{"message":"%s","type":"%s","param":null,"code":"%s"}}', message, kind[1], kind[2])
  body:setBytes(rewritten)  -- also fixes content-length; `headers` may no longer be touched after body()
end
