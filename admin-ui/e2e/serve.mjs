// A tiny static server for the built app (index.html fallback) that proxies the API and its
// WebSockets to a bkg host. Used by the e2e tests until the host serves the app itself; set
// BKG_UI_FROM_HOST=1 to skip it and point the browser at the host directly.
import { createServer, request } from 'node:http';
import { connect } from 'node:net';
import { readFile, stat } from 'node:fs/promises';
import { extname, join, normalize } from 'node:path';

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.ico': 'image/x-icon',
  '.png': 'image/png',
  '.svg': 'image/svg+xml',
  '.json': 'application/json',
  '.txt': 'text/plain',
};
const PROXIED = /^\/(api|ws|v1|metrics|healthz|readyz)(\/|$|\?)/;

/** Starts the server on an ephemeral port; resolves to {url, close}. */
export async function serveUi({ root, target }) {
  const t = new URL(target);
  const server = createServer(async (req, res) => {
    if (PROXIED.test(req.url)) {
      const up = request(
        { host: t.hostname, port: t.port, method: req.method, path: req.url, headers: { ...req.headers, host: t.host } },
        (r) => {
          res.writeHead(r.statusCode ?? 502, r.headers);
          r.pipe(res);
        },
      );
      up.on('error', (e) => {
        res.writeHead(502, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: { code: 'bad_gateway', message: e.message } }));
      });
      req.pipe(up);
      return;
    }
    const path = normalize(decodeURIComponent(new URL(req.url, 'http://x').pathname)).replace(/^(\.\.[/\\])+/, '');
    let file = join(root, path);
    try {
      if (!(await stat(file)).isFile()) throw new Error('dir');
    } catch {
      file = join(root, 'index.html');
    }
    const body = await readFile(file);
    res.writeHead(200, {
      'content-type': TYPES[extname(file)] ?? 'application/octet-stream',
      'cache-control': file.endsWith('index.html') ? 'no-cache' : 'public, max-age=31536000, immutable',
    });
    res.end(body);
  });
  // WebSocket upgrades: replay the request head to the host and splice the sockets.
  server.on('upgrade', (req, socket, head) => {
    const up = connect(Number(t.port), t.hostname, () => {
      const lines = [`${req.method} ${req.url} HTTP/1.1`];
      for (let i = 0; i < req.rawHeaders.length; i += 2) {
        const k = req.rawHeaders[i];
        lines.push(`${k}: ${k.toLowerCase() === 'host' ? t.host : req.rawHeaders[i + 1]}`);
      }
      up.write(lines.join('\r\n') + '\r\n\r\n');
      if (head?.length) up.write(head);
      up.pipe(socket);
      socket.pipe(up);
    });
    up.on('error', () => socket.destroy());
    socket.on('error', () => up.destroy());
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address();
  return {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise((r) => {
        server.closeAllConnections?.();
        server.close(() => r());
      }),
  };
}

// `node e2e/serve.mjs http://127.0.0.1:43121` serves dist/ in front of a running host.
if (import.meta.url === `file://${process.argv[1]}`) {
  const target = process.argv[2] ?? 'http://127.0.0.1:43121';
  const root = new URL('../dist/admin-ui/browser', import.meta.url).pathname;
  serveUi({ root, target }).then((s) => console.log(`admin-ui on ${s.url} -> ${target}`));
}
