// ModelSource over a local directory in Node: ranged reads through a file handle, so a
// multi-GB safetensors file is read one tensor (chunk) at a time and never held whole.

import { open, readFile, stat } from 'node:fs/promises';
import { resolve, join } from 'node:path';
import { ModelSourceError } from './errors.ts';
import { type FileStat, type ModelSource, type SourceFile, ShortReadError } from './source.ts';

export class DirSource implements ModelSource {
  readonly id: string;
  readonly chunkBytes = 16 << 20;
  readonly dir: string;

  constructor(dir: string) {
    this.dir = resolve(dir);
    this.id = 'dir:' + this.dir;
  }

  async readText(name: string): Promise<string | null> {
    try {
      return await readFile(join(this.dir, name), 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw new ModelSourceError(join(this.dir, name), (err as Error).message);
    }
  }

  async stat(name: string): Promise<FileStat | null> {
    try {
      const s = await stat(join(this.dir, name));
      return { byteLength: s.size, version: String(Math.floor(s.mtimeMs)) };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw new ModelSourceError(join(this.dir, name), (err as Error).message);
    }
  }

  async open(name: string): Promise<SourceFile> {
    const path = join(this.dir, name);
    let fh;
    try {
      fh = await open(path, 'r');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw new ModelSourceError(path, code === 'ENOENT' ? 'file not found' : (err as Error).message);
    }
    const byteLength = (await fh.stat()).size;
    const handle = fh;
    return {
      name,
      byteLength,
      async read(offset: number, length: number): Promise<Uint8Array> {
        if (offset + length > byteLength) throw new ShortReadError(name, offset, length, byteLength);
        const out = new Uint8Array(length);
        let filled = 0;
        while (filled < length) {
          const { bytesRead } = await handle.read(out, filled, Math.min(length - filled, 1 << 30), offset + filled);
          if (bytesRead === 0) throw new ShortReadError(name, offset, length, offset + filled);
          filled += bytesRead;
        }
        return out;
      },
      async close(): Promise<void> {
        await handle.close();
      },
    };
  }
}
