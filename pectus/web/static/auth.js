// User sign-in with OpenID Connect (Azure AD / Entra ID, or any provider), as a single-page app:
// Authorization Code + PKCE (S256), no client secret. The aggregator says whether sign-in is on
// and where the provider is (GET /auth/config); the provider's discovery document gives the
// endpoints. The ID token is what the aggregator checks: api.js sends it as X-Identity on every
// request and as the first message on the live socket.
//
// Invariants:
// * The tokens live in sessionStorage (this tab only, gone when it closes), never in localStorage.
// * A sign-in answer is accepted only with the `state` of a sign-in this tab started, and an ID
//   token from it only with that sign-in's `nonce`. The PKCE verifier, state and nonce are used once.
// * `identityToken()` hands out a token that is not yet due for renewal; when it is due it renews
//   with the refresh token first, and when that fails and the token has run out, it starts a full
//   sign-in (which leaves the page). One renewal runs at a time.
// * A token's lifetime is measured from when this browser received it (exp - iat), so a browser
//   clock that is off does not make every token look expired (or never expiring).

const SESSION_KEY = "pectus.auth.session"; // {idToken, refreshToken, expiresAt, renewAt} (ms, this browser's clock)
const PENDING_KEY = "pectus.auth.pending"; // {state, nonce, verifier, returnTo}: a sign-in under way
export const CALLBACK_PATH = "/auth-callback";
const RENEW_MARGIN = 120_000; // ms before expiry to renew (at most a quarter of the lifetime)
const RENEW_RETRY = 30_000; // ms between renewal attempts while the provider cannot be reached

export class SignInError extends Error {}

let settings = {use_auth: false, authority: null, client_id: null, scope: "openid profile offline_access"};
let discovery = null; // the promise of the provider's discovery document
let session = readSession();
let renewal = null; // the promise of the renewal under way
let renewFailedAt = -Infinity; // ms: after a failure, renewals wait RENEW_RETRY (no storm of requests)
let renewTimer = null;

/** "change" (a new ID token, or signed out) for whoever shows the user or sends the token. */
export const authEvents = new EventTarget();

/**
 * Load the sign-in settings from the aggregator, retrying until it answers (the page can do
 * nothing without them). `onRetry(error)` is called after each failure.
 */
export async function loadSettings(onRetry = () => {}) {
  for (let attempt = 0; ; attempt += 1) {
    try {
      const response = await fetch("/auth/config", {headers: {Accept: "application/json"}, cache: "no-store"});
      if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
      settings = {...settings, ...(await response.json())};
      if (authEnabled() && session) scheduleRenewal(session.renewAt - Date.now());
      return settings;
    } catch (error) {
      onRetry(error);
      await new Promise((resolve) => setTimeout(resolve, Math.min(15000, 500 * 2 ** attempt)));
    }
  }
}

export function authEnabled() {
  return settings.use_auth === true;
}

/** Signed in with a token that can still be used or renewed. */
export function signedIn() {
  return Boolean(session && (Date.now() < session.expiresAt || session.refreshToken));
}

/** The signed-in user: {id, name} from the ID token's claims, or null. */
export function signedInUser() {
  if (!session) return null;
  const claims = decodeClaims(session.idToken);
  return {id: claims.oid || claims.sub || "", name: claims.name || claims.preferred_username || claims.oid || claims.sub || ""};
}

/** The ID token held now (maybe due for renewal), or null when signed out. */
export function currentToken() {
  return session ? session.idToken : null;
}

/** An ID token for a request, renewed first when due; a full sign-in when it cannot be had. */
export async function identityToken() {
  if (session && Date.now() < session.renewAt) return session.idToken;
  if (await renew()) return session.idToken;
  if (session && Date.now() < session.expiresAt) return session.idToken; // renewal failed, but it still works
  return signIn();
}

/**
 * The aggregator refused `token` (401, or closed the live socket with 4401): a new token, from the
 * refresh token or else a full sign-in. A token renewed meanwhile by someone else is used as is.
 */
export async function renewRefused(token) {
  if (session && session.idToken !== token && Date.now() < session.renewAt) return session.idToken;
  if (await renew()) return session.idToken;
  return signIn();
}

/**
 * Start a sign-in at the provider: the browser leaves for its authorization endpoint and comes
 * back to /auth-callback. The returned promise never resolves (the page is leaving).
 */
export async function signIn(returnTo = location.pathname + location.search + location.hash) {
  if (!crypto.subtle) {
    throw new SignInError("Sign-in needs a secure connection: open Pectus over https (or on localhost).");
  }
  const provider = await providerConfig();
  const pending = {state: randomString(16), nonce: randomString(16), verifier: randomString(32), returnTo};
  sessionStorage.setItem(PENDING_KEY, JSON.stringify(pending));
  const url = new URL(provider.authorization_endpoint);
  const parameters = {
    response_type: "code", client_id: settings.client_id, redirect_uri: redirectUri(), scope: settings.scope,
    state: pending.state, nonce: pending.nonce, code_challenge: await challengeFor(pending.verifier),
    code_challenge_method: "S256",
  };
  for (const [name, value] of Object.entries(parameters)) url.searchParams.set(name, value);
  location.assign(url.href);
  return new Promise(() => {});
}

/**
 * On /auth-callback: check the answer against the sign-in this tab started, exchange the code for
 * tokens and check the ID token's nonce. Returns the path to go back to.
 */
export async function completeSignIn(search = location.search) {
  const answer = new URLSearchParams(search);
  const pending = JSON.parse(sessionStorage.getItem(PENDING_KEY) || "null");
  sessionStorage.removeItem(PENDING_KEY); // one answer per sign-in, right or wrong
  if (answer.get("error")) {
    throw new SignInError(`The provider refused the sign-in: ${answer.get("error_description") || answer.get("error")}`);
  }
  if (!pending || !answer.get("state") || answer.get("state") !== pending.state) {
    throw new SignInError("This sign-in answer does not belong to a sign-in started in this tab.");
  }
  if (!answer.get("code")) throw new SignInError("The provider's answer has no authorization code.");
  const tokens = await tokenRequest({
    grant_type: "authorization_code", code: answer.get("code"), redirect_uri: redirectUri(),
    client_id: settings.client_id, code_verifier: pending.verifier,
  });
  const claims = decodeClaims(tokens.id_token);
  if (claims.nonce !== pending.nonce) throw new SignInError("The ID token does not belong to this sign-in (nonce).");
  keep(tokens, null);
  // Only a path of this site: the value came from this tab, but a path is all it may be.
  return /^\/(?!\/)/.test(pending.returnTo || "") && !pending.returnTo.startsWith(CALLBACK_PATH) ? pending.returnTo : "/";
}

/** Forget the tokens and sign out at the provider, which sends the browser back to this site. */
export async function signOut() {
  const hint = session && session.idToken;
  forget();
  let provider = null;
  try {
    provider = await providerConfig();
  } catch (error) {
    console.warn("signing out at the provider is not possible", error);
  }
  if (!provider || !provider.end_session_endpoint) {
    location.assign(`${location.origin}/`);
    return;
  }
  const url = new URL(provider.end_session_endpoint);
  url.searchParams.set("post_logout_redirect_uri", location.origin);
  url.searchParams.set("client_id", settings.client_id);
  if (hint) url.searchParams.set("id_token_hint", hint);
  location.assign(url.href);
}

// -- renewal -------------------------------------------------------------------------------------

function renew() {
  if (!renewal && Date.now() - renewFailedAt < RENEW_RETRY) return Promise.resolve(false);
  if (!renewal) renewal = renewOnce().finally(() => { renewal = null; });
  return renewal;
}

/** true when a new ID token was received. */
async function renewOnce() {
  if (!session || !session.refreshToken) return false;
  try {
    const tokens = await tokenRequest({
      grant_type: "refresh_token", refresh_token: session.refreshToken, client_id: settings.client_id,
      scope: settings.scope,
    });
    keep(tokens, session.refreshToken);
    return true;
  } catch (error) {
    console.warn("renewing the sign-in failed", error);
    renewFailedAt = Date.now();
    if (error instanceof SignInError && session) {
      session.refreshToken = null; // refused: it will not work again
      sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
    }
    return false;
  }
}

function scheduleRenewal(delay) {
  clearTimeout(renewTimer);
  renewTimer = setTimeout(async () => {
    if (await renew()) return; // keep() scheduled the next one
    if (session && Date.now() < session.expiresAt) scheduleRenewal(Math.min(RENEW_RETRY, session.expiresAt - Date.now()));
    else signIn();
  }, Math.max(0, delay));
}

// -- the provider --------------------------------------------------------------------------------

function providerConfig() {
  if (!discovery) {
    discovery = (async () => {
      const response = await fetch(`${settings.authority}/.well-known/openid-configuration`, {cache: "no-store"});
      if (!response.ok) throw new Error(`the provider's discovery document: ${response.status}`);
      return response.json();
    })();
    discovery.catch(() => { discovery = null; }); // try again next time
  }
  return discovery;
}

/** POST to the token endpoint. SignInError when the provider refuses, a TypeError when it is out of reach. */
async function tokenRequest(form) {
  const provider = await providerConfig();
  const response = await fetch(provider.token_endpoint, {
    method: "POST", body: new URLSearchParams(form), headers: {Accept: "application/json"}, cache: "no-store",
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok || !body.id_token) {
    throw new SignInError(`The provider refused the tokens: ${body.error_description || body.error || response.status}`);
  }
  return body;
}

function redirectUri() {
  return `${location.origin}${CALLBACK_PATH}`;
}

// -- the session -----------------------------------------------------------------------------------

function keep(tokens, previousRefreshToken) {
  const claims = decodeClaims(tokens.id_token);
  if (typeof claims.exp !== "number") throw new SignInError("The provider's ID token has no expiry (exp).");
  const now = Date.now();
  renewFailedAt = -Infinity;
  const lifetime = Math.max(0, (claims.exp - (claims.iat || claims.nbf || now / 1000)) * 1000);
  session = {
    idToken: tokens.id_token,
    // A provider that does not rotate refresh tokens sends none back: the old one still works.
    refreshToken: tokens.refresh_token || previousRefreshToken,
    expiresAt: now + lifetime,
    renewAt: now + lifetime - Math.min(RENEW_MARGIN, lifetime / 4),
  };
  sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
  scheduleRenewal(session.renewAt - now);
  authEvents.dispatchEvent(new Event("change"));
}

function forget() {
  clearTimeout(renewTimer);
  session = null;
  sessionStorage.removeItem(SESSION_KEY);
  sessionStorage.removeItem(PENDING_KEY);
  authEvents.dispatchEvent(new Event("change"));
}

function readSession() {
  try {
    const stored = JSON.parse(sessionStorage.getItem(SESSION_KEY) || "null");
    return stored && typeof stored.idToken === "string" ? stored : null;
  } catch {
    return null;
  }
}

/** The claims of a JWT, unchecked: the aggregator checks the signature, the browser only reads. */
function decodeClaims(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const bytes = Uint8Array.from(atob(part.padEnd(Math.ceil(part.length / 4) * 4, "=")), (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return {};
  }
}

// -- PKCE ------------------------------------------------------------------------------------------

function base64url(bytes) {
  return btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function randomString(bytes) {
  return base64url(crypto.getRandomValues(new Uint8Array(bytes)));
}

async function challengeFor(verifier) {
  return base64url(new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier))));
}
