// Prepended by fast_synth to its copy of the jsii kernel (lib/program.js of the jsii runtime).
//
// jsii-runtime.js starts the kernel as a child process and relays every message between Python and
// the kernel's file descriptor 3; the copy reads Python's requests from stdin and writes its answers to
// stdout itself, which saves the relay's hop on each of the thousands of calls a synth makes. What the
// kernel's JavaScript prints would then land in the middle of those answers, so it goes to stderr as the
// relay sends it: one JSON line per chunk, which jsii's Python side decodes onto its stdout or stderr.
// The view holds a copy of this file: bump FORMAT in fast_synth/__init__.py when changing it.
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

// cdktf records where each token and computed attribute was created, capturing a full stack trace onto a
// fresh `{ stack: "" }` object (lib/tokens/private/stack-trace.js, a copy of constructs' helper): 3,146
// times in a synth of every environment, about 0.6 s of the kernel's time. In a kernel that Python
// drives, those traces hold only the kernel's own frames, never the Python line that made the token;
// cdktf shows them after the message of a token that fails to resolve, and in the manifest next to an
// annotation (our stacks add none). The kernel skips those captures, leaving the stack empty, which both
// helpers read as "no trace"; every other capture, and every error's own stack, is untouched.
// IOT_FAST_SYNTH=0 brings the traces back.
{
  const capture = Error.captureStackTrace;
  Error.captureStackTrace = function captureStackTrace(target, below) {
    const helperTrace =
      typeof target === "object" && target !== null && !(target instanceof Error) && target.stack === "";
    if (!helperTrace) {
      capture(target, below);
    }
  };
}
