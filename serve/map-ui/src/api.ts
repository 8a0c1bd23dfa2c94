// The manager's token (kept in sessionStorage, never in the URL once read) and the /v1 API calls.

const TOKEN_KEY = "fleet.token";

export interface TokenClaims {
  role: string;
  operators: string[];
  exp: number;
}

/** A refusal of the API in its `{"error": {"code", "message"}}` shape, or a network failure (`network`). */
export class ApiError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly status: number,
  ) {
    super(message);
  }
}

/** `?token=` once (then removed from the address bar), else the one this tab kept. */
export function takeToken(): string | null {
  const url = new URL(window.location.href);
  const given = url.searchParams.get("token");
  if (given) {
    sessionStorage.setItem(TOKEN_KEY, given);
    url.searchParams.delete("token");
    window.history.replaceState(null, "", url);
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

export function keepToken(token: string): void {
  sessionStorage.setItem(TOKEN_KEY, token);
}

export function forgetToken(): void {
  sessionStorage.removeItem(TOKEN_KEY);
}

/** What the token says of itself (unverified: the server verifies; this only picks operators and expiry). */
export function readClaims(token: string): TokenClaims {
  const part = token.split(".")[1];
  if (!part) throw new ApiError("token_malformed", "This is not a fleet token.", 401);
  try {
    const json = atob(part.replace(/-/g, "+").replace(/_/g, "/"));
    const claims = JSON.parse(json) as TokenClaims;
    if (!Array.isArray(claims.operators) || typeof claims.exp !== "number") throw new Error("claims");
    return claims;
  } catch {
    throw new ApiError("token_malformed", "This is not a fleet token.", 401);
  }
}

export class Api {
  constructor(
    private readonly token: string,
    private readonly onUnauthorized: (error: ApiError) => void,
  ) {}

  /** GET a /v1 path; query values that are undefined are left out. */
  async get<T>(path: string, query: Record<string, string | number | undefined> = {}): Promise<T> {
    const url = new URL(path, window.location.origin);
    for (const [k, v] of Object.entries(query)) if (v !== undefined) url.searchParams.set(k, String(v));
    let response: Response;
    try {
      response = await fetch(url, { headers: { Authorization: `Bearer ${this.token}` } });
    } catch {
      throw new ApiError("network", "The server cannot be reached.", 0);
    }
    if (response.ok) return (await response.json()) as T;
    let code = "http_" + response.status;
    let message = response.statusText;
    try {
      const body = (await response.json()) as { error?: { code: string; message: string } };
      if (body.error) ({ code, message } = body.error);
    } catch {
      // not our error shape: keep the status line
    }
    const error = new ApiError(code, message, response.status);
    if (response.status === 401) this.onUnauthorized(error);
    throw error;
  }
}

export function operatorPath(operator: string, rest: string): string {
  return `/v1/operators/${encodeURIComponent(operator)}/${rest}`;
}
