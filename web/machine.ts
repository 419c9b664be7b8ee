// The entry of a simulated machine's Worker in the page: the worker agent, bundled for the browser.

import "../agents/sim/worker.ts";
