// Typed errors of model loading. Every one names the file and the tensor/field (or byte
// offset) at fault and says what to do next, so a user with a broken download can act.

export class WeightsFormatError extends Error {
  override name = 'WeightsFormatError';
  constructor(
    readonly file: string,
    /** tensor name, config field, or "(header)" */
    readonly field: string,
    message: string,
  ) {
    super(`${file}: ${field}: ${message}`);
  }
}

/** A file the model needs could not be read from its source (missing, HTTP error, I/O). */
export class ModelSourceError extends Error {
  override name = 'ModelSourceError';
  constructor(readonly file: string, message: string) {
    super(`${file}: ${message}`);
  }
}
