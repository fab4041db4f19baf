/** The message of an error, or the thrown value as text. */
export function errorText(err) {
  return err instanceof Error ? err.message : String(err);
}
