// Progress of a draft load, reported by the loader steps (download, quantize, upload, cache)
// and passed through the library to the app. Its own module so that the library's public
// types can name it without pulling the engine into a consumer's type check.

export interface LoadProgress {
  phase: 'download' | 'quantize' | 'upload' | 'cache';
  /** 0..1, or null when the total is unknown. */
  fraction: number | null;
  detail: string;
}
