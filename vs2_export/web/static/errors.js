// errors.js: the one error type of the JS runtime (vs2.js and the modules it imports), as
// vs2_export/errors.py is the Python one's: apps catch it to tell bad input from a bug.

/** A broken contract, file or argument; the message says what was expected and what came. */
export class Vs2Error extends Error {
  constructor(message) { super(message); this.name = 'Vs2Error'; }
}
