// Prepended by tools.lazy_provider to its copy of the jsii kernel (lib/program.js of the jsii runtime).
//
// jsii-runtime.js starts the kernel as a child process and relays every message between Python and
// the kernel's file descriptor 3; the copy reads Python's requests from stdin and writes its answers to
// stdout itself, which saves the relay's hop on each of the thousands of calls a synth makes. What the
// kernel's JavaScript prints would then land in the middle of those answers, so it goes to stderr as the
// relay sends it: one JSON line per chunk, which jsii's Python side decodes onto its stdout or stderr.
// The view holds a copy of this file: bump FORMAT in tools/lazy_provider/__init__.py when changing it.
{
  const { writeSync } = require("fs");
  const { Writable } = require("stream");
  for (const name of ["stdout", "stderr"]) {
    const stream = new Writable({
      write(chunk, _encoding, callback) {
        writeSync(2, `${JSON.stringify({ [name]: chunk.toString("base64") })}\n`);
        callback();
      },
    });
    Object.defineProperty(process, name, { configurable: true, enumerable: true, get: () => stream });
  }
}
