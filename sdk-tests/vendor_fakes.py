"""Local servers that speak Anthropic's Messages API and Gemini's
generateContent API (their documented wire formats, tools included), for
the SDK suite: a bot on the `anthropic` or `google` provider pointed here
shows how each vendor's tool format reaches OpenAI's clients.

    python3 sdk-tests/vendor_fakes.py PORT

Both answer on one port: `POST /v1/messages` (Anthropic) and
`POST /v1beta/models/{model}:generateContent` / `:streamGenerateContent?alt=sse`
(Gemini). Given tools and no tool results yet, the model says a short text,
then calls every tool (or the one the tool choice names), its arguments
streamed in pieces; given tool results, it answers `Results: ...` with them.
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PREAMBLE = "Let me check."


def args_for(schema):
    props = (schema or {}).get("properties", {})
    out = {}
    for name, p in props.items():
        t = p.get("type")
        out[name] = 7 if t == "integer" else (True if t == "boolean" else f"{name}-value")
    return out


def pieces(text, n=3):
    """`text` in about `n` pieces (arguments split across many chunks)."""
    size = max(1, len(text) // n)
    return [text[i : i + size] for i in range(0, len(text), size)]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send_json(self, status, body):
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def send_sse(self, events):
        raw = "".join(events).encode()
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("content-length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_POST(self):
        length = int(self.headers.get("content-length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        if self.path == "/v1/messages":
            if not self.headers.get("x-api-key") or not self.headers.get("anthropic-version"):
                return self.send_json(
                    401,
                    {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}},
                )
            return self.anthropic(body)
        if self.path.startswith("/v1beta/models/"):
            if not self.headers.get("x-goog-api-key"):
                return self.send_json(
                    403, {"error": {"code": 403, "message": "no key", "status": "PERMISSION_DENIED"}}
                )
            return self.gemini(body, stream=":streamGenerateContent" in self.path)
        self.send_json(404, {"error": "not found"})

    # ---- Anthropic: https://docs.anthropic.com/en/api/messages

    def anthropic(self, body):
        last = body["messages"][-1]
        content = last["content"] if isinstance(last["content"], list) else [
            {"type": "text", "text": last["content"]}
        ]
        results = [b for b in content if b.get("type") == "tool_result"]
        tools = body.get("tools") or []
        choice = body.get("tool_choice") or {"type": "auto"}
        if choice.get("type") == "tool":
            tools = [t for t in tools if t["name"] == choice["name"]]
        blocks = []
        if results:
            said = "; ".join(
                r["content"] if isinstance(r["content"], str) else " ".join(c.get("text", "") for c in r["content"])
                for r in results
            )
            blocks.append({"type": "text", "text": f"Results: {said}"})
            stop = "end_turn"
        elif tools and choice.get("type") != "none":
            blocks.append({"type": "text", "text": PREAMBLE})
            for i, t in enumerate(tools):
                blocks.append(
                    {"type": "tool_use", "id": f"toolu_{i:02d}", "name": t["name"], "input": args_for(t.get("input_schema"))}
                )
            stop = "tool_use"
        else:
            text = " ".join(b.get("text", "") for b in content)
            blocks.append({"type": "text", "text": f"anthropic says: {text}"})
            stop = "end_turn"
        usage = {"input_tokens": 25, "output_tokens": 11}
        message = {
            "id": "msg_fake01",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": blocks,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": usage,
        }
        if not body.get("stream"):
            return self.send_json(200, message)
        ev = lambda name, data: f"event: {name}\ndata: {json.dumps(data)}\n\n"
        start = dict(message, content=[], stop_reason=None, usage={"input_tokens": 25, "output_tokens": 1})
        out = [ev("message_start", {"type": "message_start", "message": start})]
        for i, b in enumerate(blocks):
            if b["type"] == "text":
                out.append(ev("content_block_start", {"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": ""}}))
                for p in pieces(b["text"], 2):
                    out.append(ev("content_block_delta", {"type": "content_block_delta", "index": i, "delta": {"type": "text_delta", "text": p}}))
            else:
                out.append(ev("content_block_start", {"type": "content_block_start", "index": i,
                                                      "content_block": {"type": "tool_use", "id": b["id"], "name": b["name"], "input": {}}}))
                for p in pieces(json.dumps(b["input"]), 4):
                    out.append(ev("content_block_delta", {"type": "content_block_delta", "index": i, "delta": {"type": "input_json_delta", "partial_json": p}}))
            out.append(ev("content_block_stop", {"type": "content_block_stop", "index": i}))
        out.append(ev("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None}, "usage": {"output_tokens": 11}}))
        out.append(ev("message_stop", {"type": "message_stop"}))
        self.send_sse(out)

    # ---- Gemini: https://ai.google.dev/api/generate-content

    def gemini(self, body, stream):
        contents = body.get("contents") or []
        parts = contents[-1]["parts"] if contents else []
        results = [p["functionResponse"] for p in parts if "functionResponse" in p]
        decls = [d for t in body.get("tools") or [] for d in t.get("functionDeclarations", [])]
        mode = ((body.get("toolConfig") or {}).get("functionCallingConfig") or {}).get("mode", "AUTO")
        allowed = ((body.get("toolConfig") or {}).get("functionCallingConfig") or {}).get("allowedFunctionNames")
        if allowed:
            decls = [d for d in decls if d["name"] in allowed]
        if results:
            said = "; ".join(json.dumps(r.get("response")) for r in results)
            out_parts = [{"text": f"Results: {said}"}]
        elif decls and mode != "NONE":
            out_parts = [{"text": PREAMBLE}] + [
                {"functionCall": {"name": d["name"], "args": args_for(d.get("parametersJsonSchema") or d.get("parameters"))}}
                for d in decls
            ]
        else:
            text = " ".join(p.get("text", "") for p in parts)
            out_parts = [{"text": f"gemini says: {text}"}]
        usage = {"promptTokenCount": 21, "candidatesTokenCount": 9, "totalTokenCount": 30}
        if not stream:
            return self.send_json(
                200,
                {"candidates": [{"content": {"role": "model", "parts": out_parts}, "finishReason": "STOP", "index": 0}],
                 "usageMetadata": usage, "modelVersion": "gemini-fake"},
            )
        events = []
        for i, p in enumerate(out_parts):
            chunk = {"candidates": [{"content": {"role": "model", "parts": [p]}, "index": 0}], "modelVersion": "gemini-fake"}
            if i == len(out_parts) - 1:
                chunk["candidates"][0]["finishReason"] = "STOP"
                chunk["usageMetadata"] = usage
            events.append(f"data: {json.dumps(chunk)}\r\n\r\n")
        self.send_sse(events)


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
