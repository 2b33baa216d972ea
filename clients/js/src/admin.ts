/**
 * The server side, for Node: UserSig v2 generation (byte-identical to Tencent's `tls-sig-api-v2`)
 * and signed calls to Crier's Tencent-compatible REST API (shared/spec/rest-api.md).
 */

import { createHmac, randomInt } from 'node:crypto';
import { deflateSync } from 'node:zlib';

/** Tencent's libraries default to 180 days. */
export const DEFAULT_EXPIRE = 180 * 86400;

export interface UserSigOptions {
  sdkAppId: number;
  /** The app's secret key; its UTF-8 bytes key the HMAC (it is not hex-decoded). */
  secretKey: string;
  identifier: string;
  /** Seconds from `time` until the signature expires. Default 180 days. */
  expire?: number;
  /** Unix seconds the signature is made at. Default: now. */
  time?: number;
  /** TRTC's optional user buffer (PrivateMapKey); IM logins do not use it. */
  userBuf?: Uint8Array;
}

/**
 * A UserSig v2: deflated JSON in base64 with `+/=` replaced by `*-_`. Key order, number
 * formatting and zlib settings follow `tls-sig-api-v2`, so the same inputs give the same bytes.
 */
export function genUserSig(options: UserSigOptions): string {
  const { sdkAppId, secretKey, identifier } = options;
  const expire = options.expire ?? DEFAULT_EXPIRE;
  const time = options.time ?? Math.floor(Date.now() / 1000);
  const userBuf = options.userBuf && Buffer.from(options.userBuf).toString('base64');
  let signed =
    `TLS.identifier:${identifier}\nTLS.sdkappid:${sdkAppId}\n` + `TLS.time:${time}\nTLS.expire:${expire}\n`;
  if (userBuf != null) signed += `TLS.userbuf:${userBuf}\n`;
  const doc: Record<string, string | number> = {
    'TLS.ver': '2.0',
    'TLS.identifier': String(identifier),
    'TLS.sdkappid': Number(sdkAppId),
    'TLS.time': Number(time),
    'TLS.expire': Number(expire),
  };
  if (userBuf != null) doc['TLS.userbuf'] = userBuf;
  doc['TLS.sig'] = createHmac('sha256', secretKey).update(signed).digest('base64');
  return deflateSync(Buffer.from(JSON.stringify(doc)))
    .toString('base64')
    .replace(/\+/g, '*')
    .replace(/\//g, '-')
    .replace(/=/g, '_');
}

/** Every REST answer carries this envelope. */
export interface ApiAnswer {
  ActionStatus: 'OK' | 'FAIL';
  ErrorCode: number;
  ErrorInfo: string;
  [field: string]: unknown;
}

/** An answer with `ActionStatus: "FAIL"`; `code` is its `ErrorCode`, `answer` the whole body. */
export class CrierApiError extends Error {
  constructor(
    message: string,
    public code: number,
    public answer: ApiAnswer,
  ) {
    super(message);
    this.name = 'CrierApiError';
  }
}

export interface CrierAdminOptions {
  /** The server's base URL, e.g. `https://push.example.com`. */
  url: string;
  sdkAppId: number;
  secretKey: string;
  /** An admin of the app (its `admins` list). Default `administrator`. */
  identifier?: string;
  /** Default: the global `fetch` (Node 18 and later). */
  fetch?: typeof fetch;
}

/** The fields of `all_member_push/im_push`; `MsgRandom` is filled in when absent. */
export interface PushRequest {
  MsgBody: Array<{ MsgType: string; MsgContent: Record<string, unknown> }>;
  MsgRandom?: number;
  MsgLifeTime?: number;
  From_Account?: string;
  Condition?: Record<string, unknown>;
  OfflinePushInfo?: Record<string, unknown>;
  [field: string]: unknown;
}

export class CrierAdmin {
  private base: string;
  private identifier: string;
  private fetch: typeof fetch;

  constructor(private options: CrierAdminOptions) {
    this.base = options.url.replace(/\/+$/, '');
    this.identifier = options.identifier ?? 'administrator';
    this.fetch = options.fetch ?? fetch;
  }

  /** A UserSig for one of the app's accounts, e.g. to hand to a page's `getUserSig`. */
  genUserSig(identifier: string, expire?: number, time?: number): string {
    const { sdkAppId, secretKey } = this.options;
    return genUserSig({ sdkAppId, secretKey, identifier, expire, time });
  }

  /**
   * `POST /v4/{path}` (e.g. `all_member_push/im_push`) signed as the admin. Resolves to the
   * answer when `ActionStatus` is `OK`, rejects with a {@link CrierApiError} otherwise.
   */
  async call<T = Record<string, unknown>>(path: string, body: unknown = {}): Promise<ApiAnswer & T> {
    const query = new URLSearchParams({
      sdkappid: String(this.options.sdkAppId),
      identifier: this.identifier,
      // A short-lived signature per call: nothing long-lived ends up in a proxy's log.
      usersig: this.genUserSig(this.identifier, 3600),
      random: String(randomInt(0, 2 ** 32)),
      contenttype: 'json',
    });
    const response = await this.fetch(`${this.base}/v4/${path}?${query}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    if (!response.ok) throw new Error(`POST /v4/${path}: HTTP ${response.status}`);
    const answer = (await response.json()) as ApiAnswer & T;
    if (answer.ActionStatus != 'OK') {
      throw new CrierApiError(`${path}: ${answer.ErrorCode} ${answer.ErrorInfo}`, answer.ErrorCode, answer);
    }
    return answer;
  }

  /** Pushes to all users (or those `Condition` selects); resolves to the TaskId. */
  async push(request: PushRequest): Promise<string> {
    const body = { MsgRandom: randomInt(0, 2 ** 32), ...request };
    const answer = await this.call<{ TaskId: string }>('all_member_push/im_push', body);
    return answer.TaskId;
  }

  importAccount(userId: string): Promise<ApiAnswer> {
    return this.call('im_open_login_svc/account_import', { UserID: userId });
  }

  /** Ends the account's sessions: each gets `Kicked` and does not reconnect. */
  kick(userId: string): Promise<ApiAnswer> {
    return this.call('im_open_login_svc/kick', { UserID: userId });
  }

  /** `Online` or `Offline` for each account. */
  async onlineStatus(userIds: string[]): Promise<Record<string, string>> {
    const answer = await this.call<{ QueryResult: Array<{ To_Account: string; Status: string }> }>(
      'openim/query_online_status',
      { To_Account: userIds },
    );
    return Object.fromEntries(answer.QueryResult.map((r) => [r.To_Account, r.Status]));
  }
}
