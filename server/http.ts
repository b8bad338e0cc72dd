// The gateway's HTTP side: the built web app (dist/), `/models/...` from a local models
// folder with byte-range support (the browser's URL loader fetches safetensors in ranges),
// `GET /api/info` (JSON: target model, verifier, tokenizer hash, limits), `GET /health`
// (200 ready / 503 loading or draining, for load balancers and orchestrators) and
// `GET /api/upgrade-check` (why a browser's WebSocket upgrade would be refused).
//
// /api/info, /api/upgrade-check and /models need no token even on a --token gateway, on
// purpose: the token guards the target's compute (the WebSocket); /api/upgrade-check is what a
// browser reads to explain a refused upgrade, and /models holds the public weights the page
// loads before it can connect. Keep private weights out of --models-dir (or put auth in the
// proxy in front, deploy/).

import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { extname, join, resolve, sep } from 'node:path';

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.wasm': 'application/wasm',
  '.txt': 'text/plain; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.wgsl': 'text/plain; charset=utf-8',
  '.woff2': 'font/woff2',
};

export interface HttpOptions {
  staticDir?: string;
  modelsDir?: string;
  info: () => unknown;
  /** GET /health: status 200 = ready; anything else (503) = loading or draining. */
  health?: () => { status: number; body: unknown };
  /** Requests no route matched go here (the Vite dev server with --dev) instead of a 404. */
  fallback?: (req: IncomingMessage, res: ServerResponse) => void;
  /** Origins allowed to fetch /api/info and /models cross-origin (e.g. the Vite dev server). */
  allowOrigins: string[];
  /**
   * GET /api/upgrade-check?origin=O&token=T: would a WebSocket upgrade from page origin O with
   * token T be taken now? 101 = yes, else the HTTP status the upgrade would get and why.
   */
  upgradeCheck?: (req: IncomingMessage, url: URL) => { status: number; message: string };
}

/** Resolve `rel` inside `root`, or null if it escapes it. */
function inside(root: string, rel: string): string | null {
  const base = resolve(root);
  const p = resolve(base, '.' + sep + rel);
  return p === base || p.startsWith(base + sep) ? p : null;
}

function send(res: ServerResponse, status: number, body: string, type = 'text/plain; charset=utf-8'): void {
  res.writeHead(status, { 'Content-Type': type, 'Content-Length': Buffer.byteLength(body), 'Cache-Control': 'no-cache' });
  res.end(body);
}

/**
 * Parse a Range header against a file size (RFC 9110 §14.2): null = serve the whole file,
 * 'bad' = 416. The unit is case-insensitive (`BYTES=` is served); a header the server does not
 * serve — another unit (`items=`), several ranges, or a malformed one — is ignored (200, whole
 * file), which §14.2 allows; only a well-formed single byte range that is unsatisfiable is 416.
 */
export function parseRange(header: string | undefined, size: number): { start: number; end: number } | null | 'bad' {
  if (!header) return null;
  const m = /^bytes[ \t]*=[ \t]*(\d*)-(\d*)$/i.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) return null;
  let start: number;
  let end: number;
  if (m[1] === '') {
    const n = Number(m[2]);
    if (n === 0) return 'bad';
    start = Math.max(0, size - n);
    end = size - 1;
  } else {
    start = Number(m[1]);
    end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
  }
  if (start > end || start >= size) return 'bad';
  return { start, end };
}

async function serveFile(req: IncomingMessage, res: ServerResponse, path: string, extraHeaders: Record<string, string>): Promise<boolean> {
  let st;
  try {
    st = await stat(path);
  } catch {
    return false;
  }
  if (st.isDirectory()) return serveFile(req, res, join(path, 'index.html'), extraHeaders);
  if (!st.isFile()) return false;
  const range = parseRange(req.headers.range, st.size);
  const headers: Record<string, string | number> = {
    'Content-Type': TYPES[extname(path).toLowerCase()] ?? 'application/octet-stream',
    'Accept-Ranges': 'bytes',
    'Last-Modified': st.mtime.toUTCString(),
    'Cache-Control': 'no-cache',
    ...extraHeaders,
  };
  if (range === 'bad') {
    res.writeHead(416, { ...headers, 'Content-Range': `bytes */${st.size}`, 'Content-Length': 0 });
    res.end();
    return true;
  }
  const { start, end } = range ?? { start: 0, end: st.size - 1 };
  const length = st.size === 0 ? 0 : end - start + 1;
  res.writeHead(range ? 206 : 200, { ...headers, 'Content-Length': length, ...(range ? { 'Content-Range': `bytes ${start}-${end}/${st.size}` } : {}) });
  if (req.method === 'HEAD' || length === 0) {
    res.end();
    return true;
  }
  const stream = createReadStream(path, { start, end });
  stream.on('error', () => res.destroy());
  stream.pipe(res);
  return true;
}

export function createHttpHandler(o: HttpOptions): (req: IncomingMessage, res: ServerResponse) => void {
  return (req, res) => {
    void handle(req, res).catch((e: Error) => {
      if (!res.headersSent) send(res, 500, `internal error: ${e.message}\n`);
      else res.destroy();
    });
  };

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const origin = req.headers.origin;
    // --allow-origin '*' opens /ws to any page; the HTTP side (info, models) follows it
    const anyOrigin = o.allowOrigins.includes('*');
    const cors: Record<string, string> = origin && (anyOrigin || o.allowOrigins.includes(origin))
      ? { 'Access-Control-Allow-Origin': anyOrigin ? '*' : origin, 'Access-Control-Expose-Headers': 'Content-Range, Content-Length, Accept-Ranges', Vary: 'Origin' }
      : {};
    if (req.method === 'OPTIONS') {
      res.writeHead(204, { ...cors, 'Access-Control-Allow-Methods': 'GET, HEAD', 'Access-Control-Allow-Headers': 'Range' });
      res.end();
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(res, 405, 'method not allowed: use GET or HEAD\n');
    let pathname: string;
    try {
      pathname = decodeURIComponent(new URL(req.url ?? '/', 'http://gateway').pathname);
    } catch {
      return send(res, 400, 'bad request path\n');
    }
    if (pathname.includes('\0')) return send(res, 400, 'bad request path\n');
    if (pathname === '/health' && o.health) {
      const h = o.health();
      return send(res, h.status, JSON.stringify(h.body) + '\n', TYPES['.json']);
    }
    if (pathname === '/api/info') {
      res.setHeader('Cache-Control', 'no-cache');
      for (const [k, v] of Object.entries(cors)) res.setHeader(k, v);
      return send(res, 200, JSON.stringify(o.info(), null, 2) + '\n', TYPES['.json']);
    }
    if (pathname === '/api/upgrade-check' && o.upgradeCheck) {
      // A browser hides why an upgrade failed (close 1006 whatever the status): the page asks
      // here. Any origin may read the answer: it tells a refused page only what the refusal
      // said (the upgrade itself answers the same question for a token).
      const r = o.upgradeCheck(req, new URL(req.url ?? '/', 'http://gateway'));
      res.setHeader('Access-Control-Allow-Origin', '*');
      return send(res, 200, JSON.stringify({ admit: r.status === 101, status: r.status, message: r.message }) + '\n', TYPES['.json']);
    }
    if (pathname.startsWith('/models/') && o.modelsDir) {
      const p = inside(o.modelsDir, pathname.slice('/models/'.length));
      if (p && (await serveFile(req, res, p, cors))) return;
      return send(res, 404, `not found: ${pathname} (models are served from the gateway's --models-dir)\n`);
    }
    if (o.fallback) return o.fallback(req, res);
    if (o.staticDir) {
      const p = inside(o.staticDir, pathname);
      if (p && (await serveFile(req, res, p, {}))) return;
    } else if (pathname === '/') {
      return send(res, 404, 'this gateway serves no web app: build it with `npm run build` or pass --static DIR\n');
    }
    send(res, 404, `not found: ${pathname}\n`);
  }
}
