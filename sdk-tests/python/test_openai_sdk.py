"""chatcore through OpenAI's official Python SDK (`openai` on PyPI).

Run by `.ci/sdk.sh` against a spawned release server; the environment
names the server and its keys (see that script). Bots are models:
`echo` repeats the last user message, `helper` is the mock provider's
general model (it calls the tools it is given and answers from their
results, and answers JSON when asked for it).
"""

import json
import os
import urllib.request

import pytest
from openai import (
    AuthenticationError,
    BadRequestError,
    NotFoundError,
    OpenAI,
    PermissionDeniedError,
    RateLimitError,
)

BASE = os.environ["CHATCORE_BASE"]
ADMIN = os.environ["CHATCORE_ADMIN_KEY"]
CONVERSATION = "X-Chatcore-Conversation-Id"


def client(key=None):
    return OpenAI(
        base_url=f"{BASE}/v1", api_key=key or os.environ["CHATCORE_CHAT_KEY"], max_retries=0
    )


def stored(conversation):
    """The stored messages of a conversation, through the management API."""
    req = urllib.request.Request(
        f"{BASE}/v1/conversations/{conversation}/messages",
        headers={"Authorization": f"Bearer {ADMIN}"},
    )
    with urllib.request.urlopen(req) as r:
        return json.load(r)["data"]


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}},
    },
}


def test_plain_completion_is_one_stored_turn():
    raw = client().chat.completions.with_raw_response.create(
        model="echo",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hello from python"},
        ],
        max_tokens=64,
    )
    done = raw.parse()
    assert done.object == "chat.completion"
    assert done.model == "echo"
    assert done.choices[0].message.role == "assistant"
    assert done.choices[0].message.content == "hello from python"
    assert done.choices[0].finish_reason == "stop"
    assert done.usage.total_tokens == done.usage.prompt_tokens + done.usage.completion_tokens > 0
    msgs = stored(raw.headers[CONVERSATION])
    assert [(m["role"], m["content"]) for m in msgs] == [
        ("user", "hello from python"),
        ("assistant", "hello from python"),
    ]
    assert msgs[1]["status"] == "complete"
    assert msgs[1]["total_tokens"] == done.usage.total_tokens


def test_streamed_with_usage():
    stream = client().chat.completions.create(
        model="echo",
        messages=[{"role": "user", "content": "one two three four"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two three four"
    assert chunks[-1].choices == []
    assert chunks[-1].usage.total_tokens > 0
    assert all(c.usage is None for c in chunks[:-1])
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and all(f is None for f in finishes[:-1])


def test_multi_turn_in_one_stored_conversation():
    c = client()
    first = c.chat.completions.with_raw_response.create(
        model="echo", messages=[{"role": "user", "content": "first"}]
    )
    conversation = first.headers[CONVERSATION]
    answer = first.parse().choices[0].message.content
    second = c.chat.completions.with_raw_response.create(
        model="echo",
        messages=[
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": answer},
            {"role": "user", "content": "second"},
        ],
        extra_headers={CONVERSATION: conversation},
    )
    assert second.headers[CONVERSATION] == conversation
    assert second.parse().choices[0].message.content == "second"
    msgs = stored(conversation)
    assert [(m["role"], m["content"]) for m in msgs] == [
        ("user", "first"),
        ("assistant", "first"),
        ("user", "second"),
        ("assistant", "second"),
    ]


def test_a_tool_call_and_its_result_sent_back():
    c = client()
    ask = {"role": "user", "content": "What is the weather in Paris?"}
    raw = c.chat.completions.with_raw_response.create(
        model="helper", messages=[ask], tools=[WEATHER], tool_choice="required"
    )
    conversation = raw.headers[CONVERSATION]
    done = raw.parse()
    assert done.choices[0].finish_reason == "tool_calls"
    calls = done.choices[0].message.tool_calls
    assert len(calls) == 1 and calls[0].type == "function"
    assert calls[0].function.name == "get_weather"
    assert isinstance(json.loads(calls[0].function.arguments)["city"], str)
    back = c.chat.completions.create(
        model="helper",
        messages=[
            ask,
            done.choices[0].message,
            {"role": "tool", "tool_call_id": calls[0].id, "content": "18C and sunny"},
        ],
        tools=[WEATHER],
        extra_headers={CONVERSATION: conversation},
    )
    assert "18C and sunny" in back.choices[0].message.content
    assert back.choices[0].finish_reason == "stop"
    msgs = stored(conversation)
    assert [m["role"] for m in msgs] == ["user", "assistant", "tool", "assistant"]
    assert msgs[1]["tool_calls"][0]["id"] == calls[0].id
    assert msgs[1]["tool_calls"][0]["name"] == "get_weather"
    assert msgs[2]["tool_call_id"] == calls[0].id
    assert msgs[2]["content"] == "18C and sunny"


def test_parallel_tool_calls():
    done = client().chat.completions.create(
        model="helper",
        messages=[{"role": "user", "content": "Weather and time in Paris?"}],
        tools=[WEATHER, TIME],
    )
    calls = done.choices[0].message.tool_calls
    assert [c.function.name for c in calls] == ["get_weather", "get_time"]
    assert len({c.id for c in calls}) == 2
    one = client().chat.completions.create(
        model="helper",
        messages=[{"role": "user", "content": "Weather and time in Paris?"}],
        tools=[WEATHER, TIME],
        parallel_tool_calls=False,
    )
    assert len(one.choices[0].message.tool_calls) == 1


def test_streamed_tool_calls_assemble_by_index():
    stream = client().chat.completions.create(
        model="helper",
        messages=[{"role": "user", "content": "Weather and time in Paris?"}],
        tools=[WEATHER, TIME],
        stream=True,
    )
    calls = {}
    finish = None
    for chunk in stream:
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        for d in choice.delta.tool_calls or []:
            call = calls.setdefault(d.index, {"id": None, "name": "", "arguments": ""})
            if d.id:
                call["id"] = d.id
            if d.function and d.function.name:
                call["name"] += d.function.name
            if d.function and d.function.arguments:
                call["arguments"] += d.function.arguments
        finish = choice.finish_reason or finish
    assert finish == "tool_calls"
    assert [calls[i]["name"] for i in sorted(calls)] == ["get_weather", "get_time"]
    for call in calls.values():
        assert call["id"]
        assert isinstance(json.loads(call["arguments"]), dict)


def test_json_schema_response_format():
    done = client().chat.completions.create(
        model="helper",
        messages=[{"role": "user", "content": "A city, please."}],
        response_format={
            "type": "json_schema",
            "json_schema": {
                "name": "city",
                "strict": True,
                "schema": {
                    "type": "object",
                    "properties": {"name": {"type": "string"}, "population": {"type": "integer"}},
                    "required": ["name", "population"],
                    "additionalProperties": False,
                },
            },
        },
    )
    city = json.loads(done.choices[0].message.content)
    assert isinstance(city["name"], str) and isinstance(city["population"], int)


def test_an_image_part():
    pixel = (
        "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
        "YPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
    )
    image = {
        "role": "user",
        "content": [
            {"type": "text", "text": "What is in this picture?"},
            {"type": "image_url", "image_url": {"url": pixel}},
        ],
    }
    done = client().chat.completions.create(model="helper", messages=[image])
    assert done.choices[0].message.content
    # A bot whose provider reads no images refuses the part, by name.
    with pytest.raises(BadRequestError) as e:
        client().chat.completions.create(model="no-images", messages=[image])
    assert "messages[0].content" in e.value.message


def test_errors_are_the_sdks_own_exceptions():
    hello = [{"role": "user", "content": "hi"}]
    with pytest.raises(AuthenticationError):
        client("cc_0000000000000000_wrong").chat.completions.create(model="echo", messages=hello)
    with pytest.raises(PermissionDeniedError):
        client(os.environ["CHATCORE_READ_KEY"]).chat.completions.create(
            model="echo", messages=hello
        )
    with pytest.raises(NotFoundError):
        client().chat.completions.create(model="no-such-bot", messages=hello)
    with pytest.raises(BadRequestError) as e:
        client().chat.completions.create(model="echo", messages=hello, n=2)
    assert e.value.param == "n"
    assert e.value.type == "invalid_request_error"
    limited = client(os.environ["CHATCORE_LIMITED_KEY"])
    limited.chat.completions.create(model="echo", messages=hello)
    with pytest.raises(RateLimitError) as e:
        limited.chat.completions.create(model="echo", messages=hello)
    assert int(e.value.response.headers["retry-after"]) >= 1


def test_models_are_the_bots():
    c = client()
    ids = [m.id for m in c.models.list()]
    assert {"echo", "helper", "no-images"} <= set(ids)
    echo = c.models.retrieve("echo")
    assert echo.object == "model"
    assert echo.owned_by == os.environ["CHATCORE_TENANT_SLUG"]
    with pytest.raises(NotFoundError):
        c.models.retrieve("no-such-bot")


@pytest.mark.parametrize("bot", ["claude", "gemini"])
def test_a_vendors_tool_format_reaches_openai_clients_intact(bot):
    """Anthropic's `tool_use` blocks (after a text block) and Gemini's
    `functionCall` parts, complete and streamed, arrive as OpenAI tool
    calls; their results go back as the vendor's `tool_result` /
    `functionResponse`."""
    c = client()
    ask = {"role": "user", "content": "Weather and time in Oslo?"}
    raw = c.chat.completions.with_raw_response.create(model=bot, messages=[ask], tools=[WEATHER, TIME])
    conversation = raw.headers[CONVERSATION]
    done = raw.parse()
    msg = done.choices[0].message
    assert done.choices[0].finish_reason == "tool_calls"
    assert msg.content == "Let me check."
    assert [t.function.name for t in msg.tool_calls] == ["get_weather", "get_time"]
    assert json.loads(msg.tool_calls[0].function.arguments) == {"city": "city-value"}
    assert json.loads(msg.tool_calls[1].function.arguments) == {"zone": "zone-value"}
    assert len({t.id for t in msg.tool_calls}) == 2

    stream = c.chat.completions.create(model=bot, messages=[ask], tools=[WEATHER, TIME], stream=True)
    text, calls, finish = "", {}, None
    for chunk in stream:
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        text += choice.delta.content or ""
        for d in choice.delta.tool_calls or []:
            call = calls.setdefault(d.index, {"id": None, "name": "", "arguments": ""})
            call["id"] = d.id or call["id"]
            call["name"] += (d.function.name or "") if d.function else ""
            call["arguments"] += (d.function.arguments or "") if d.function else ""
        finish = choice.finish_reason or finish
    assert text == "Let me check."
    assert sorted(calls) == [0, 1], "OpenAI indexes calls from 0, whatever the vendor's block index"
    assert [calls[i]["name"] for i in (0, 1)] == ["get_weather", "get_time"]
    assert json.loads(calls[0]["arguments"]) == {"city": "city-value"}
    assert finish == "tool_calls"

    back = c.chat.completions.create(
        model=bot,
        tools=[WEATHER, TIME],
        messages=[
            ask,
            msg,
            {"role": "tool", "tool_call_id": msg.tool_calls[0].id, "content": "3C and snow"},
            {"role": "tool", "tool_call_id": msg.tool_calls[1].id, "content": "09:30"},
        ],
        extra_headers={CONVERSATION: conversation},
    )
    answer = back.choices[0].message.content
    assert answer.startswith("Results:") and "3C and snow" in answer and "09:30" in answer
    roles = [m["role"] for m in stored(conversation)]
    assert roles == ["user", "assistant", "tool", "tool", "assistant"]
