// Signed calls to Crier's REST API: the console is one more admin client. It holds the
// sdkappid, the admin identifier and a UserSig for this browser tab only (sessionStorage);
// it never sees the app's secret key.

const STORAGE_KEY = 'crier-console-credentials';

/** A refusal from the server, with Tencent's code and Crier's explanation. */
export class ApiError extends Error {
  constructor(code, info) {
    super(info || `error ${code}`);
    this.code = code;
    this.info = info;
  }
}

/** What each code means, in words an operator can act on. */
const WORDS = {
  60009: 'The server does not know this command (is it an older Crier?).',
  60012: 'The sdkappid is missing.',
  70001: 'The UserSig has expired: make a new one with crier usersig.',
  70002: 'The UserSig is empty: paste the one crier usersig printed.',
  70003: 'That is not a UserSig: paste exactly what crier usersig printed.',
  70009: 'The UserSig is wrong: its signature does not match this app\'s key. Make it with the key of this sdkappid.',
  70013: 'The UserSig was made for another identifier: make it for the admin identifier you typed.',
  70014: 'The UserSig was made for another sdkappid.',
  70020: 'This server has no app with that sdkappid.',
  70107: 'There is no such account in this app.',
  70402: 'The request was malformed.',
  70403: 'That identifier is not an admin of this app.',
  90001: 'The request was malformed.',
  90002: 'A message element is malformed.',
  90005: 'MsgRandom is missing.',
  90007: 'The message body must be a list of elements.',
  90009: 'That identifier is not an admin of this app: sign in with one of the app\'s admins.',
  90010: 'The message is not valid: unknown element type, more than one custom element, or over 8,000 bytes.',
  90018: 'Too many accounts in one request.',
  90020: 'A tag is longer than 50 bytes.',
  90022: 'The same tag is in both the AND and the OR list.',
  90024: 'Too soon: pushes must be at least the app\'s interval apart (1 s by default), and the console may make 10 reads a second.',
  90026: 'The lifetime must be 0 to 604,800 seconds (7 days).',
  90030: 'An attribute value must be 1 to 50 bytes.',
  90032: 'Too many tags: at most 10 in each list.',
  90033: 'Unknown attribute: that name is not one of the app\'s attribute names.',
  90039: 'Tags and attributes cannot be combined in one condition.',
  90040: 'A tag in the condition is empty.',
  90043: 'The offline notification (OfflinePushInfo) is malformed.',
  90044: 'The lifetime must be a whole number of seconds.',
  90045: 'Pushing to all users is not enabled for this app.',
  90047: 'The daily push quota is used up: pushes are allowed again after 00:00 UTC.',
  90048: 'The sender is neither an account nor an admin.',
  90104: 'A parameter is out of range.',
  91000: 'The server failed: try again later.',
};

/** The meaning of an error in words, with the server's own detail. */
export function inWords(error) {
  if (!(error instanceof ApiError)) return `The server could not be reached: ${error.message}`;
  const words = WORDS[error.code] || 'The request was refused.';
  return `${words} (${error.code}: ${error.info})`;
}

export function loadCredentials() {
  try {
    return JSON.parse(sessionStorage.getItem(STORAGE_KEY) || 'null');
  } catch {
    return null;
  }
}

export function saveCredentials(credentials) {
  if (credentials) sessionStorage.setItem(STORAGE_KEY, JSON.stringify(credentials));
  else sessionStorage.removeItem(STORAGE_KEY);
}

export class Api {
  constructor({ sdkappid, identifier, usersig }) {
    this.sdkappid = String(sdkappid).trim();
    this.identifier = identifier.trim();
    this.usersig = usersig.trim();
  }

  /** POST /v4/{path} with the admin's signature; answers the envelope's fields or throws. */
  async call(path, body = {}) {
    const query = new URLSearchParams({
      sdkappid: this.sdkappid,
      identifier: this.identifier,
      usersig: this.usersig,
      random: String(Math.floor(Math.random() * 4294967295)),
      contenttype: 'json',
    });
    const response = await fetch(`/v4/${path}?${query}`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
    });
    if (!response.ok) throw new ApiError(0, `HTTP ${response.status}`);
    const answer = await response.json();
    if (answer.ActionStatus !== 'OK') throw new ApiError(answer.ErrorCode, answer.ErrorInfo);
    return answer;
  }
}
