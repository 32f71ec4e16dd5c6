// elizaOS 1.7.2 as a lane of `make bench-compare` (tests/bench/bench_compare.py).
//
// One agent: @elizaos/core's AgentRuntime with @elizaos/plugin-sql (PGlite in a
// temporary folder) and @elizaos/plugin-bootstrap, plus in-process instant
// models (the answers and the 384-d vectors come from the bench, the same as
// elizamesh gets). Each message goes the way the 1.7.2 server sends it:
// ensureConnection, then messageService.handleMessage, whose callback stores
// the reply and queues its embedding (as MessageBusService.onResponse does).
//
// JSON lines. Out: {"event":"started"}, then per level {"event":"ready"} and
// {"event":"done", latencies, elapsed, errors, counts}. In: a level
// ({"cmd":"level", rooms, messages, warmup}), {"cmd":"go"}, {"cmd":"exit"}.
// Usage: node driver.mjs WORKLOAD.json DATA_DIR
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { randomUUID } from 'node:crypto';

const [workloadPath, dataDir] = process.argv.slice(2);
const workload = JSON.parse(readFileSync(workloadPath, 'utf8'));
process.env.PGLITE_DATA_DIR = dataDir;
process.env.LOG_LEVEL = process.env.LOG_LEVEL || 'error';

const { AgentRuntime, ModelType, ChannelType, stringToUuid } = await import('@elizaos/core');
const sql = (await import('@elizaos/plugin-sql')).default;
const bootstrap = (await import('@elizaos/plugin-bootstrap')).default;

const counts = { TEXT_LARGE: 0, TEXT_SMALL: 0, plan: 0, should_respond: 0, reflection: 0, embeddings: 0 };

function kindOf(prompt, small) {
  if (small && prompt.includes('relationships')) return 'reflection';
  return small ? 'should_respond' : 'plan';
}

function answer(type, params) {
  const small = type === 'TEXT_SMALL';
  const kind = kindOf(String(params?.prompt ?? ''), small);
  counts[type] += 1;
  counts[kind] += 1;
  return workload.answers[kind];
}

function embedding(text) {
  const lower = text.toLowerCase();
  const vector = new Array(workload.dimensions).fill(0);
  for (let c = 0; c < 26; c += 1) {
    const letter = String.fromCharCode(97 + c);
    vector[c] = lower.split(letter).length - 1;
  }
  if (!vector.slice(0, 26).some((v) => v)) vector[0] = 1;
  return vector;
}

const models = {
  name: 'bench-instant-model',
  description: 'Instant answers for the bench',
  priority: 100,
  models: {
    [ModelType.TEXT_LARGE]: async (_runtime, params) => answer('TEXT_LARGE', params),
    [ModelType.TEXT_SMALL]: async (_runtime, params) => answer('TEXT_SMALL', params),
    [ModelType.TEXT_EMBEDDING]: async (_runtime, params) => {
      // ensureEmbeddingDimension asks with null, to learn the size: not an embedding of a memory.
      if (params === null || params === undefined) return embedding('');
      counts.embeddings += 1;
      return embedding(typeof params === 'string' ? params : String(params.text ?? ''));
    },
  },
};

const runtime = new AgentRuntime({
  character: workload.character,
  plugins: [sql, bootstrap, models],
  conversationLength: workload.conversationLength,
  settings: { PGLITE_DATA_DIR: dataDir },
});
// 1.7.2 creates the tables before initialize (its server runs the migrations first):
// register plugin-sql, open PGlite, migrate; initialize then finds the schema up to date.
await runtime.registerPlugin(sql);
await runtime.adapter.init();
await runtime.runPluginMigrations();
await runtime.initialize();
const serverId = stringToUuid('bench-server');
let expectedEmbeddings = 0;

async function say(room, text) {
  const entityId = stringToUuid(`user-${room}`);
  const roomId = stringToUuid(`room-${room}`);
  const worldId = stringToUuid('bench-world');
  await runtime.ensureConnection({
    entityId,
    roomId,
    worldId,
    worldName: 'bench',
    userName: `user-${room}`,
    name: `user-${room}`,
    source: 'bench',
    type: ChannelType.DM,
    channelId: room,
    messageServerId: serverId,
  });
  const message = {
    id: randomUUID(),
    entityId,
    agentId: runtime.agentId,
    roomId,
    worldId,
    content: { text, source: 'bench', channelType: ChannelType.DM },
    createdAt: Date.now(),
  };
  expectedEmbeddings += 1;
  let replied = false;
  await runtime.messageService.handleMessage(runtime, message, async (content) => {
    const reply = {
      id: content.responseId ?? randomUUID(),
      entityId: runtime.agentId,
      agentId: runtime.agentId,
      roomId,
      worldId,
      content: { ...content, inReplyTo: message.id },
      createdAt: Date.now(),
    };
    await runtime.createMemory(reply, 'messages');
    if (content.text) {
      expectedEmbeddings += 1;
      await runtime.queueEmbeddingGeneration(reply, 'normal');
    }
    replied = true;
    return [reply];
  });
  if (!replied) throw new Error(`no reply in room ${room}`);
}

async function drained(limitMs = 60000) {
  const queue = runtime.getService('embedding-generation');
  const started = Date.now();
  while (Date.now() - started < limitMs) {
    const idle = !queue || (queue.queue.length === 0 && !queue.isProcessing);
    if (counts.embeddings >= expectedEmbeddings && idle) return;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  throw new Error(`embeddings not drained: ${counts.embeddings} of ${expectedEmbeddings}`);
}

function emit(event) {
  process.stdout.write(`${JSON.stringify(event)}\n`);
}

const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
async function next() {
  const { value, done } = await lines.next();
  if (done) throw new Error('stdin closed');
  return JSON.parse(value);
}

emit({ event: 'started', agentId: runtime.agentId });
for (;;) {
  const level = await next();
  if (level.cmd === 'exit') break;
  await Promise.all(level.rooms.map((room) => say(room, level.warmup)));
  await drained();
  emit({ event: 'ready', counts: { ...counts } });
  await next(); // go
  const latencies = [];
  let errors = 0;
  const started = performance.now();
  await Promise.all(
    level.rooms.map(async (room, r) => {
      for (const text of level.messages[r]) {
        const t0 = performance.now();
        try {
          await say(room, text);
          latencies.push((performance.now() - t0) / 1000);
        } catch (error) {
          errors += 1;
          process.stderr.write(`${error?.stack ?? error}\n`);
        }
      }
    }),
  );
  const elapsed = (performance.now() - started) / 1000;
  await drained();
  emit({ event: 'done', latencies, elapsed, errors, counts: { ...counts } });
}
await runtime.stop();
process.exit(0);
