// chatcore through OpenAI's official Node SDK (`openai` on npm), with
// node's own test runner. Run by `.ci/sdk.sh` against a spawned release
// server; the environment names the server and its keys. Bots are models:
// `echo` repeats the last user message, `helper` is the mock provider's
// general model (it calls the tools it is given, answers from their
// results, and answers JSON when asked for it).
import { test } from "node:test";
import assert from "node:assert/strict";
import OpenAI from "openai";

const BASE = process.env.CHATCORE_BASE;
const ADMIN = process.env.CHATCORE_ADMIN_KEY;
const CONVERSATION = "x-chatcore-conversation-id";

const client = (key = process.env.CHATCORE_CHAT_KEY) =>
  new OpenAI({ baseURL: `${BASE}/v1`, apiKey: key, maxRetries: 0 });

async function stored(conversation) {
  const r = await fetch(`${BASE}/v1/conversations/${conversation}/messages`, {
    headers: { Authorization: `Bearer ${ADMIN}` },
  });
  assert.equal(r.status, 200);
  return (await r.json()).data;
}

const WEATHER = {
  type: "function",
  function: {
    name: "get_weather",
    parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
  },
};
const TIME = {
  type: "function",
  function: { name: "get_time", parameters: { type: "object", properties: { zone: { type: "string" } } } },
};

test("a plain completion is one stored turn", async () => {
  const { data, response } = await client()
    .chat.completions.create({
      model: "echo",
      messages: [
        { role: "system", content: "Be brief." },
        { role: "user", content: "hello from node" },
      ],
      max_tokens: 64,
    })
    .withResponse();
  assert.equal(data.object, "chat.completion");
  assert.equal(data.choices[0].message.content, "hello from node");
  assert.equal(data.choices[0].finish_reason, "stop");
  assert.ok(data.usage.total_tokens > 0);
  const msgs = await stored(response.headers.get(CONVERSATION));
  assert.deepEqual(
    msgs.map((m) => [m.role, m.content]),
    [
      ["user", "hello from node"],
      ["assistant", "hello from node"],
    ],
  );
});

test("a stream with usage", async () => {
  const stream = await client().chat.completions.create({
    model: "echo",
    messages: [{ role: "user", content: "streamed to node" }],
    stream: true,
    stream_options: { include_usage: true },
  });
  const chunks = [];
  for await (const c of stream) chunks.push(c);
  const text = chunks.map((c) => c.choices[0]?.delta?.content ?? "").join("");
  assert.equal(text, "streamed to node");
  const last = chunks.at(-1);
  assert.deepEqual(last.choices, []);
  assert.ok(last.usage.total_tokens > 0);
  assert.ok(chunks.slice(0, -1).every((c) => c.usage === null));
});

test("multi-turn in one stored conversation", async () => {
  const c = client();
  const first = await c.chat.completions
    .create({ model: "echo", messages: [{ role: "user", content: "uno" }] })
    .withResponse();
  const conversation = first.response.headers.get(CONVERSATION);
  const second = await c.chat.completions
    .create(
      {
        model: "echo",
        messages: [
          { role: "user", content: "uno" },
          first.data.choices[0].message,
          { role: "user", content: "dos" },
        ],
      },
      { headers: { [CONVERSATION]: conversation } },
    )
    .withResponse();
  assert.equal(second.response.headers.get(CONVERSATION), conversation);
  const msgs = await stored(conversation);
  assert.deepEqual(
    msgs.map((m) => m.content),
    ["uno", "uno", "dos", "dos"],
  );
});

test("tools: single, sent back, parallel and streamed", async () => {
  const c = client();
  const ask = { role: "user", content: "Weather in Lima?" };
  const one = await c.chat.completions
    .create({ model: "helper", messages: [ask], tools: [WEATHER], tool_choice: "required" })
    .withResponse();
  const conversation = one.response.headers.get(CONVERSATION);
  const msg = one.data.choices[0].message;
  assert.equal(one.data.choices[0].finish_reason, "tool_calls");
  assert.equal(msg.tool_calls.length, 1);
  assert.equal(msg.tool_calls[0].function.name, "get_weather");
  assert.equal(typeof JSON.parse(msg.tool_calls[0].function.arguments).city, "string");
  const back = await c.chat.completions.create(
    {
      model: "helper",
      tools: [WEATHER],
      messages: [ask, msg, { role: "tool", tool_call_id: msg.tool_calls[0].id, content: "22C" }],
    },
    { headers: { [CONVERSATION]: conversation } },
  );
  assert.match(back.choices[0].message.content, /22C/);
  const msgs = await stored(conversation);
  assert.deepEqual(
    msgs.map((m) => m.role),
    ["user", "assistant", "tool", "assistant"],
  );
  assert.equal(msgs[2].tool_call_id, msg.tool_calls[0].id);

  const both = await c.chat.completions.create({ model: "helper", messages: [ask], tools: [WEATHER, TIME] });
  assert.deepEqual(
    both.choices[0].message.tool_calls.map((t) => t.function.name),
    ["get_weather", "get_time"],
  );

  const stream = await c.chat.completions.create({
    model: "helper",
    messages: [ask],
    tools: [WEATHER, TIME],
    stream: true,
  });
  const calls = [];
  let finish = null;
  for await (const chunk of stream) {
    const choice = chunk.choices[0];
    if (!choice) continue;
    for (const d of choice.delta.tool_calls ?? []) {
      calls[d.index] ??= { id: null, name: "", args: "" };
      if (d.id) calls[d.index].id = d.id;
      calls[d.index].name += d.function?.name ?? "";
      calls[d.index].args += d.function?.arguments ?? "";
    }
    finish = choice.finish_reason ?? finish;
  }
  assert.equal(finish, "tool_calls");
  assert.deepEqual(
    calls.map((x) => x.name),
    ["get_weather", "get_time"],
  );
  for (const x of calls) {
    assert.ok(x.id);
    assert.equal(typeof JSON.parse(x.args), "object");
  }
});

test("json_schema response format", async () => {
  const done = await client().chat.completions.create({
    model: "helper",
    messages: [{ role: "user", content: "A city." }],
    response_format: {
      type: "json_schema",
      json_schema: {
        name: "city",
        schema: {
          type: "object",
          properties: { name: { type: "string" }, population: { type: "integer" } },
          required: ["name", "population"],
        },
      },
    },
  });
  const city = JSON.parse(done.choices[0].message.content);
  assert.equal(typeof city.name, "string");
  assert.ok(Number.isInteger(city.population));
});

test("an image part", async () => {
  const image = {
    role: "user",
    content: [
      { type: "text", text: "What is this?" },
      { type: "image_url", image_url: { url: "https://images.example/cat.png" } },
    ],
  };
  const done = await client().chat.completions.create({ model: "helper", messages: [image] });
  assert.ok(done.choices[0].message.content);
  await assert.rejects(
    client().chat.completions.create({ model: "no-images", messages: [image] }),
    (e) => e instanceof OpenAI.BadRequestError && /messages\[0\]\.content/.test(e.message),
  );
});

test("errors are the SDK's own classes", async () => {
  const hello = [{ role: "user", content: "hi" }];
  const fails = (c, body, cls) =>
    assert.rejects(c.chat.completions.create(body), (e) => e instanceof cls);
  await fails(client("cc_0000000000000000_wrong"), { model: "echo", messages: hello }, OpenAI.AuthenticationError);
  await fails(client(process.env.CHATCORE_READ_KEY), { model: "echo", messages: hello }, OpenAI.PermissionDeniedError);
  await fails(client(), { model: "no-such-bot", messages: hello }, OpenAI.NotFoundError);
  await assert.rejects(
    client().chat.completions.create({ model: "echo", messages: hello, n: 3 }),
    (e) => e instanceof OpenAI.BadRequestError && e.param === "n",
  );
  const limited = client(process.env.CHATCORE_LIMITED_KEY_NODE);
  await limited.chat.completions.create({ model: "echo", messages: hello });
  await fails(limited, { model: "echo", messages: hello }, OpenAI.RateLimitError);
});

test("models.list() lists the bots", async () => {
  const c = client();
  const ids = [];
  for await (const m of c.models.list()) ids.push(m.id);
  for (const want of ["echo", "helper", "no-images"]) assert.ok(ids.includes(want), ids.join(","));
  const echo = await c.models.retrieve("echo");
  assert.equal(echo.owned_by, process.env.CHATCORE_TENANT_SLUG);
  await assert.rejects(c.models.retrieve("no-such-bot"), (e) => e instanceof OpenAI.NotFoundError);
});
