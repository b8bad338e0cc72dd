// Test fixture (not shipped): an app's own worker file, WebLLM-style; importing 'duet/worker'
// is all it takes (the entry exposes the engine's worker API through comlink).
import 'duet/worker';
