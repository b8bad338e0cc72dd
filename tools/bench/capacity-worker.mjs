// Worker-thread entry for the capacity benchmark's gateway: registers tsx in this thread
// (loader registrations do not cross into workers), then runs the TypeScript worker.
import { register } from 'tsx/esm/api';

register();
await import('./capacity-worker.ts');
