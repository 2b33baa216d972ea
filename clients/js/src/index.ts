/**
 * A client of Crier's WebSocket protocol (shared/spec/client-protocol.md) for browsers, Node and
 * React Native. It has no dependencies and no Node imports: everything it needs is a WebSocket.
 */

// Declared here rather than taken from the DOM or Node typings, so the build typechecks against
// neither and the published types ask nothing of the user's `lib` setting.
declare function setTimeout(callback: () => void, ms: number): unknown;
declare function clearTimeout(id: unknown): void;

/** The part of the WebSocket API the client uses; browsers', Node 22's and `ws` all have it. */
export interface WebSocketLike {
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
}

export type WebSocketConstructor = new (url: string) => WebSocketLike;

/** The `Platform` of a `Login` frame. */
export type LoginPlatform = 'iPhone' | 'Android' | 'Web' | 'PC' | 'iPad' | 'Mac';

/** Where offline notifications go: the `Platform` of `RegisterDevice`. */
export type DevicePlatform = 'apns' | 'fcm' | 'webhook';

/** One element of a message body, as given to `im_push`. */
export interface MsgElement {
  MsgType: string;
  MsgContent: Record<string, unknown>;
}

/** A `Push` frame. Fields the server adds later are kept. */
export interface Push {
  TaskId: string;
  From_Account: string;
  /** Unix seconds when the push was accepted. */
  MsgTimeStamp: number;
  MsgRandom: number;
  MsgBody: MsgElement[];
  OfflinePushInfo?: Record<string, unknown>;
  /** True when the push was kept for this account while it was offline (a catch-up at login). */
  Offline: boolean;
  [field: string]: unknown;
}

/** A `Revoke` frame: the push with this TaskId was recalled. */
export interface Revoke {
  TaskId: string;
  OfflinePushInfo?: Record<string, unknown>;
}

export interface CrierClientOptions {
  /**
   * `wss://host/v4/ws`; an `http(s)://host` base gets the scheme and the path added. Several
   * URLs are the nodes of a cluster: the first login goes to one chosen at random, each attempt
   * after it to the next in the list, and the client backs off only once all have failed.
   */
  url: string | readonly string[];
  sdkAppId: number;
  identifier: string;
  /** Called before every login, so a page can fetch a fresh UserSig from its backend. */
  getUserSig: () => string | Promise<string>;
  platform?: LoginPlatform;
  /** A WebSocket implementation, e.g. the `ws` package on Node 20. Default: the global one. */
  WebSocket?: WebSocketConstructor;
  /** `'manual'`: pushes are acknowledged only by {@link CrierClient.ack}. Default `'auto'`. */
  ack?: 'auto' | 'manual';
  /** Sends a Ping after this many ms without a frame from the server. Default 25000. */
  pingInterval?: number;
  /** A connection that stays silent this long after a Ping is dead. Default 10000. */
  pongTimeout?: number;
  /** The upgrade and the login must finish within this many ms. Default 10000. */
  connectTimeout?: number;
  /** Reconnect delays double from `minReconnectDelay` up to `maxReconnectDelay` (ms), with jitter. */
  minReconnectDelay?: number;
  maxReconnectDelay?: number;
  /** How many TaskIds are remembered to drop repeats. Default 10000. */
  dedupCapacity?: number;
}

export interface Disconnected {
  /** The WebSocket close code; 1006 also when the client gave up on a silent connection. */
  code: number;
  reason: string;
  willReconnect: boolean;
}

/** An `Error` frame (`code` is its `ErrorCode`) or a failure on the client's side (`code` 0). */
export class CrierError extends Error {
  constructor(
    message: string,
    public code: number,
    /** True when the client has stopped because of it. */
    public fatal = false,
    public cause?: unknown,
  ) {
    super(message);
    this.name = 'CrierError';
  }
}

export interface CrierEvents {
  /** `url`: the server logged in to, in the form the client used (`ws(s)://.../v4/ws`). */
  connected: { identifier: string; serverTime: number; url: string };
  disconnected: Disconnected;
  /** With `ack: 'auto'` the push is acknowledged once every handler has returned or resolved. */
  push: Push;
  revoke: Revoke;
  kicked: { reason: string };
  error: CrierError;
}

export type ClientState = 'idle' | 'connecting' | 'connected' | 'closed';

type Frame = Record<string, any>;
type Pending = { frame: Frame; resolve: () => void; reject: (e: CrierError) => void };

// What is remembered of a TaskId handed over: its handler is running, it is acknowledged (a
// repeat is acknowledged again, in case the first Ack was lost with its connection), or it was
// recalled.
const HANDLING = 0;
const ACKED = 1;
const REVOKED = 2;

const LOGIN_FAILED = 4001;
const KICKED = 4003;
const INTERNAL = 91000;
const ACKS_PER_FRAME = 500;

/** The WebSocket URL for a `url` option entry: `http(s)://host` becomes `ws(s)://host/v4/ws`. */
function webSocketUrl(url: string): string {
  url = url.replace(/^http/, 'ws');
  return /\/v4\/ws$/.test(url) ? url : url.replace(/\/?$/, '/v4/ws');
}

export class CrierClient {
  state: ClientState = 'idle';
  /** The server in use: logged in to while `state` is `connected`, being tried while `connecting`. */
  url?: string;
  private o: Required<Omit<CrierClientOptions, 'WebSocket'>> & { WebSocket?: WebSocketConstructor };
  private handlers: { [E in keyof CrierEvents]?: Array<(arg: CrierEvents[E]) => unknown> } = {};
  private ws?: WebSocketLike;
  private timer: unknown;
  /** Counts connection attempts; an async step of an older one sees a newer number and stops. */
  private generation = 0;
  private failures = 0;
  private urls: string[];
  /** Index in `urls` of the server the next attempt goes to. */
  private turn = 0;
  /**
   * Servers tried since the last back-off or login; the one of a login that later ends counts,
   * so that the others are tried before it again and before backing off.
   */
  private tried = 0;
  /** Logins refused in a row; a second refusal with a fresh UserSig stops the client. */
  private refusals = 0;
  private loginError?: Frame;
  private kicked = false;
  private lastHeard = 0;
  private seen = new Map<string, number>();
  private acks = new Set<string>();
  /** Device requests waiting for a connection. */
  private queued: Pending[] = [];
  /** One entry per Ping sent, in order: the device request it confirms, or null (keep-alive). */
  private pings: Array<Pending | null> = [];

  constructor(options: CrierClientOptions) {
    this.o = {
      platform: 'Web',
      ack: 'auto',
      pingInterval: 25000,
      pongTimeout: 10000,
      connectTimeout: 10000,
      minReconnectDelay: 500,
      maxReconnectDelay: 20000,
      dedupCapacity: 10000,
      ...options,
    };
    this.urls = ([] as string[]).concat(options.url).map(webSocketUrl);
    // Fail here, where the mistake is, rather than at the first connection attempt.
    if (!this.urls.length) throw new TypeError('url: give at least one server');
    if (!this.o.WebSocket && !(globalThis as any).WebSocket) {
      throw new TypeError('no global WebSocket here (Node 20?): pass one as the WebSocket option');
    }
  }

  /** Adds a handler; answers a function that removes it. */
  on<E extends keyof CrierEvents>(event: E, handler: (arg: CrierEvents[E]) => unknown): () => void {
    ((this.handlers[event] as unknown[]) ||= []).push(handler);
    return () => this.off(event, handler);
  }

  off<E extends keyof CrierEvents>(event: E, handler: (arg: CrierEvents[E]) => unknown): void {
    const list = this.handlers[event] as unknown[] | undefined;
    // An unknown handler's -1 becomes an index past the end: nothing is removed.
    if (list) list.splice(list.indexOf(handler) >>> 0, 1);
  }

  /** Starts connecting (again, after {@link CrierClient.close}). */
  connect(): void {
    if (this.state == 'idle' || this.state == 'closed') {
      this.kicked = false;
      this.refusals = this.failures = this.tried = 0;
      // At random, so that the clients of a cluster spread over its nodes.
      this.turn = Math.floor(Math.random() * this.urls.length);
      this.open();
    }
  }

  /** Sends the acknowledgements still due, closes the connection and stops reconnecting. */
  close(): void {
    if (this.state == 'closed') return;
    if (this.state == 'connected') this.flushAcks();
    this.stop(1000, 'closed by the client');
  }

  /** Acknowledges a push (needed with `ack: 'manual'` only); until then it comes again at each login. */
  ack(taskId: string): void {
    this.remember(taskId, ACKED);
    this.acks.add(taskId);
    if (this.state == 'connected') this.flushAcks();
  }

  /**
   * Registers where offline notifications for this account go. Resolves once the server has
   * stored it (waiting for a connection if there is none), rejects with the server's error.
   */
  registerDevice(platform: DevicePlatform, token: string): Promise<void> {
    return this.request({ Type: 'RegisterDevice', Platform: platform, Token: token });
  }

  unregisterDevice(platform: DevicePlatform, token: string): Promise<void> {
    return this.request({ Type: 'UnregisterDevice', Platform: platform, Token: token });
  }

  private emit<E extends keyof CrierEvents>(event: E, arg: CrierEvents[E]): unknown[] {
    return (this.handlers[event] || []).slice().map((handler) => {
      try {
        return handler(arg);
      } catch (e) {
        // A handler's bug must not leave the connection half-handled: it surfaces, later.
        if (event == 'push') return Promise.reject(e);
        setTimeout(() => {
          throw e;
        }, 0);
      }
    });
  }

  private error(message: string, code: number, fatal?: boolean, cause?: unknown): void {
    this.emit('error', new CrierError(message, code, fatal, cause));
  }

  private arm(ms: number, then: () => void): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(then, ms);
  }

  private async open(): Promise<void> {
    const generation = ++this.generation;
    this.state = 'connecting';
    this.loginError = undefined;
    const url = (this.url = this.urls[this.turn]);
    this.turn = (this.turn + 1) % this.urls.length;
    this.tried++;
    // Bounds getUserSig (a page's fetch may hang), the upgrade and the login together.
    this.arm(this.o.connectTimeout, () => this.drop(`not logged in within ${this.o.connectTimeout} ms`));
    let sig: string;
    try {
      sig = await this.o.getUserSig();
    } catch (e) {
      if (generation != this.generation) return;
      this.error('getUserSig failed', 0, false, e);
      return this.again();
    }
    if (generation != this.generation) return;
    const WS = this.o.WebSocket || (globalThis as any).WebSocket;
    let ws: WebSocketLike;
    try {
      ws = this.ws = new WS(url);
    } catch (e) {
      // A malformed URL: trying again would not help.
      this.error(`cannot open ${url}`, 0, true, e);
      return this.stop(1006, 'cannot open the WebSocket');
    }
    ws.onopen = () =>
      this.send({
        Type: 'Login',
        SdkAppId: this.o.sdkAppId,
        Identifier: this.o.identifier,
        UserSig: sig,
        Platform: this.o.platform,
      });
    ws.onmessage = (event) => this.receive(event.data);
    ws.onclose = (event) => this.ended(event.code, event.reason);
    // An error is always followed by a close, which is where it is handled.
    ws.onerror = () => {};
  }

  private send(frame: Frame): void {
    try {
      this.ws!.send(JSON.stringify(frame));
    } catch {
      // The socket is closing; its close event says what happens next.
    }
  }

  /** Gives up on a socket that stopped answering, without waiting for its closing handshake. */
  private drop(reason: string): void {
    const ws = this.ws;
    if (ws) {
      ws.onclose = ws.onmessage = null;
      ws.close();
    }
    this.ended(1006, reason);
  }

  private stop(code: number, reason: string): void {
    this.generation++;
    clearTimeout(this.timer);
    const ws = this.ws;
    if (ws) {
      ws.onclose = ws.onmessage = null;
      ws.close(1000);
      this.ws = undefined;
    }
    this.state = 'closed';
    this.url = undefined;
    for (const pending of this.queued.concat(this.pings as Pending[])) {
      pending && pending.reject(new CrierError('the client was closed', 0, true));
    }
    this.queued = [];
    this.pings = [];
    this.emit('disconnected', { code, reason, willReconnect: false });
  }

  /** Keep-alive: a Ping after `pingInterval` of silence, and the end after `pongTimeout` more. */
  private watch(): void {
    const quiet = Date.now() - this.lastHeard;
    if (quiet < this.o.pingInterval) {
      return this.arm(this.o.pingInterval - quiet, () => this.watch());
    }
    this.ping(null);
    this.arm(this.o.pongTimeout, () => {
      if (Date.now() - this.lastHeard >= this.o.pongTimeout) {
        this.drop(`no answer to Ping within ${this.o.pongTimeout} ms`);
      } else this.watch();
    });
  }

  private ping(pending: Pending | null): void {
    this.pings.push(pending);
    this.send({ Type: 'Ping' });
  }

  private request(frame: Frame): Promise<void> {
    return new Promise((resolve, reject) => {
      const pending = { frame, resolve, reject };
      if (this.state == 'closed') reject(new CrierError('the client is closed', 0, true));
      else if (this.state == 'connected') this.sendRequest(pending);
      else this.queued.push(pending);
    });
  }

  /** Sends the request and a Ping: the server answers frames in order, so the Pong confirms it. */
  private sendRequest(pending: Pending): void {
    this.send(pending.frame);
    this.ping(pending);
  }

  private flushAcks(): void {
    const ids = [...this.acks];
    this.acks.clear();
    for (let i = 0; i < ids.length; i += ACKS_PER_FRAME) {
      this.send({ Type: 'Ack', TaskIds: ids.slice(i, i + ACKS_PER_FRAME) });
    }
  }

  private remember(taskId: string, what: number): void {
    this.seen.delete(taskId);
    this.seen.set(taskId, what);
    if (this.seen.size > this.o.dedupCapacity) this.seen.delete(this.seen.keys().next().value!);
  }

  private receive(data: unknown): void {
    this.lastHeard = Date.now();
    let frame: Frame;
    try {
      frame = JSON.parse(data as string);
    } catch (e) {
      return this.error('a frame from the server is not JSON', 0, false, e);
    }
    switch (frame.Type) {
      case 'LoginOK':
        this.state = 'connected';
        this.failures = this.refusals = 0;
        this.tried = 1;
        this.flushAcks();
        this.queued.splice(0).forEach((pending) => this.sendRequest(pending));
        this.watch();
        this.emit('connected', { identifier: frame.Identifier, serverTime: frame.ServerTime, url: this.url! });
        break;
      case 'Error': {
        if (this.state != 'connected') {
          this.loginError = frame;
          break;
        }
        const error = new CrierError(frame.ErrorInfo, frame.ErrorCode);
        const pending = this.pings[0];
        if (pending) {
          // The request is answered; the Pong that follows now stands for nothing.
          this.pings[0] = null;
          pending.reject(error);
        } else this.emit('error', error);
        break;
      }
      case 'Pong': {
        const pending = this.pings.shift();
        if (pending) pending.resolve();
        break;
      }
      case 'Push':
        this.push(frame as Push);
        break;
      case 'Revoke':
        if (!this.seen.has(frame.TaskId)) this.remember(frame.TaskId, REVOKED);
        this.emit('revoke', frame as Revoke);
        break;
      case 'Kicked':
        this.kicked = true;
        this.emit('kicked', { reason: frame.Reason });
    }
  }

  private push(push: Push): void {
    const known = this.seen.get(push.TaskId);
    if (known != undefined) {
      if (known == ACKED) this.ack(push.TaskId);
      return;
    }
    // With nobody to hand it to, it is left for the next login rather than acknowledged.
    if (!(this.handlers.push || []).length) return;
    this.remember(push.TaskId, HANDLING);
    const handled = Promise.all(this.emit('push', push));
    if (this.o.ack == 'auto') {
      handled.then(
        () => this.ack(push.TaskId),
        (e) => {
          // Not acknowledged: the server hands it over again at the next page load.
          this.error(`a push handler failed on ${push.TaskId}`, 0, false, e);
        },
      );
    }
  }

  private backoff(): number {
    const ceiling = Math.min(this.o.maxReconnectDelay, this.o.minReconnectDelay * 2 ** this.failures++);
    return ceiling / 2 + (Math.random() * ceiling) / 2;
  }

  /** After a failed attempt: the next server at once, or a back-off once a whole round failed. */
  private again(): void {
    if (this.tried < this.urls.length) return this.retry(0);
    this.tried = 0;
    this.retry(this.backoff());
  }

  private retry(delay: number): void {
    this.state = 'connecting';
    this.arm(delay, () => this.open());
  }

  private ended(code: number, reason: string): void {
    const wasConnected = this.state == 'connected';
    const login = this.loginError;
    this.ws = undefined;
    this.generation++;
    clearTimeout(this.timer);
    // Requests sent but not confirmed go again: registering a device twice is harmless.
    this.queued.unshift(...(this.pings.filter(Boolean) as Pending[]));
    this.pings = [];
    if (this.kicked || code == KICKED) {
      if (!this.kicked) this.emit('kicked', { reason });
      return this.stop(code, reason);
    }
    if (code == LOGIN_FAILED && login && login.ErrorCode != INTERNAL) {
      const fatal = ++this.refusals > 1;
      this.error(login.ErrorInfo, login.ErrorCode, fatal);
      // One more try at once, with a fresh UserSig: an expired one is the usual cause.
      if (fatal) return this.stop(code, reason);
      return this.retry(0);
    }
    if (wasConnected) this.emit('disconnected', { code, reason, willReconnect: true });
    if (this.state != 'closed') this.again();
  }
}
