// A tiny Hugging Face hub on 127.0.0.1 for the model-download e2e tests (the Node twin of
// host/tests/it/hub.rs): GET /{org}/{name}/resolve/{revision}/{file} with the headers hf-hub reads
// (`x-repo-commit`, `etag`, `x-linked-etag` = the sha256 of files stored with git-lfs),
// `Range: bytes=a-b` answered with 206 + `Content-Range: bytes a-b/total`, 404 for unknown files.
// A file can trickle (`trickle: {bytes, everyMs}`) so that a download stays running long enough
// to be cancelled.
import { createHash } from 'node:crypto';
import { createServer } from 'node:http';

export const COMMIT = '0123456789abcdef0123456789abcdef01234567';

/** Deterministic bytes that do not compress away. */
export function bytes(len, seed = 1) {
  const out = Buffer.alloc(len);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < len; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

export const sha256 = (data) => createHash('sha256').update(data).digest('hex');

/**
 * Starts the hub. `files`: { 'org/name/file': { data: Buffer, lfs?: boolean, trickle?: {bytes, everyMs} } }.
 * Resolves to { url, seen: [{path, range}], add(key, file), close() }.
 */
export async function startFakeHub(files = {}) {
  const table = new Map(Object.entries(files));
  const seen = [];
  const sockets = new Set();
  const timers = new Set();
  const server = createServer((req, res) => {
    const range = req.headers['range'] ?? null;
    seen.push({ path: req.url, range });
    const m = /^\/(.+?)\/resolve\/([^/]+)\/(.+)$/.exec(decodeURIComponent(req.url.split('?')[0]));
    const file = m ? table.get(`${m[1]}/${m[3]}`) : undefined;
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { 'content-length': 0 }).end();
      return;
    }
    if (!file) {
      const body = 'Entry not found';
      res.writeHead(404, { 'x-error-code': 'EntryNotFound', 'content-length': body.length, connection: 'close' }).end(body);
      return;
    }
    const data = file.data;
    const total = data.length;
    const hash = sha256(data);
    let start = 0;
    let end = total; // exclusive
    const r = range && /^bytes=(\d*)-(\d*)$/.exec(range.trim());
    if (r) {
      start = Math.min(r[1] === '' ? 0 : Number(r[1]), total);
      end = Math.min(r[2] === '' ? total : Number(r[2]) + 1, total);
    }
    const headers = {
      'x-repo-commit': COMMIT,
      // git-lfs files: the etag is not a sha256, the linked etag is; others: a git blob id.
      etag: `"${file.lfs ? hash.slice(0, 40) : hash.slice(24)}"`,
      'accept-ranges': 'bytes',
      'content-type': 'application/octet-stream',
      'content-length': end - start,
      connection: 'close',
    };
    if (file.lfs) {
      headers['x-linked-etag'] = `"${hash}"`;
      headers['x-linked-size'] = total;
    }
    if (r) headers['content-range'] = `bytes ${start}-${Math.max(start, end - 1)}/${total}`;
    res.writeHead(r ? 206 : 200, headers);
    const body = data.subarray(start, end);
    if (req.method === 'HEAD') return res.end();
    if (!file.trickle || body.length <= 1) return res.end(body);
    // Trickle: a small piece every few ms, until done or the client goes away.
    let off = 0;
    const step = () => {
      timers.delete(t);
      if (res.destroyed || res.writableEnded) return;
      const piece = body.subarray(off, off + file.trickle.bytes);
      off += piece.length;
      if (off >= body.length) return res.end(piece);
      res.write(piece);
      t = setTimeout(step, file.trickle.everyMs);
      timers.add(t);
    };
    let t = setTimeout(step, 0);
    timers.add(t);
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
  const { port } = server.address();
  return {
    url: `http://127.0.0.1:${port}`,
    seen,
    add: (key, file) => table.set(key, file),
    /** Requests for a file (transfers only, not the 1-byte metadata probe). */
    transfers: (suffix) => seen.filter((s) => s.path.endsWith(suffix) && s.range !== 'bytes=0-0'),
    async close() {
      for (const t of timers) clearTimeout(t);
      for (const s of sockets) s.destroy();
      await new Promise((ok) => server.close(() => ok()));
    },
  };
}
