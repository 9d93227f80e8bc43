// The web UI's shell: navigation, the token prompt for servers that require
import "./style.css";
// one, and the page for the current URL.

import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import { onAuthRequired, setToken, token, type AuthProblem } from "./api";
import { RunPage } from "./pages/Run";
import { RunsPage } from "./pages/Runs";
import { WorkersPage } from "./pages/Workers";
import { WorkflowPage, WorkflowsPage } from "./pages/Workflows";
import { Link, href, useLocation, type Location } from "./router";

function Page({ location }: { location: Location }) {
  const parts = location.path
    .split("/")
    .filter(Boolean)
    .map((p) => {
      try {
        return decodeURIComponent(p);
      } catch {
        return p;
      }
    });
  if (parts.length === 0) return <RunsPage location={location} />;
  if (parts[0] === "runs" && parts[1]) return <RunPage key={parts[1]} id={parts[1]} location={location} />;
  if (parts[0] === "runs") return <RunsPage location={location} />;
  if (parts[0] === "workflows" && parts[1]) return <WorkflowPage key={parts[1]} name={parts[1]} />;
  if (parts[0] === "workflows") return <WorkflowsPage />;
  if (parts[0] === "workers") return <WorkersPage />;
  return (
    <main id="main" class="page">
      <h1>Not found</h1>
      <p>
        Nothing here. <Link href={href("/")}>See the runs.</Link>
      </p>
    </main>
  );
}

function TokenForm({ problem, onDone }: { problem: AuthProblem | undefined; onDone: () => void }) {
  const [value, setValue] = useState("");
  return (
    <form
      class="token-form"
      aria-label="API token"
      onSubmit={(e) => {
        e.preventDefault();
        setToken(value.trim());
        onDone();
      }}
    >
      {problem && (
        <p role="alert" data-auth-problem={problem.tokenSent ? "refused" : "missing"}>
          {problem.tokenSent ? (
            <>The server refused this token: {problem.message}</>
          ) : (
            <>
              This server requires a token. An admin makes one with <code>ork token create --role viewer</code> (
              <code>operator</code> to start, cancel and retry runs).
            </>
          )}
        </p>
      )}
      <label>
        Token
        <input type="password" autoComplete="off" value={value} onInput={(e) => setValue(e.currentTarget.value)} />
      </label>
      <button type="submit" class="primary">
        Use token
      </button>
      <p class="muted small">
        Kept in this tab only (session storage) and sent as an <code>Authorization: Bearer</code> header, never in a
        URL.
      </p>
    </form>
  );
}

function App() {
  const location = useLocation();
  const [authProblem, setAuthProblem] = useState<AuthProblem>();
  const [showToken, setShowToken] = useState(false);
  const [reload, setReload] = useState(0);
  useEffect(() => onAuthRequired(setAuthProblem), []);
  const section = location.path.split("/")[1] || "runs";
  const nav = [
    { to: "/", label: "Runs", id: "runs" },
    { to: "/workflows", label: "Workflows", id: "workflows" },
    { to: "/workers", label: "Workers", id: "workers" },
  ];
  return (
    <>
      <a class="skip" href="#main">
        Skip to content
      </a>
      <header class="top">
        <Link href={href("/")} class="brand">
          ork
        </Link>
        <nav aria-label="Sections">
          {nav.map((n) => (
            <Link key={n.id} href={href(n.to)} aria-current={section === n.id ? "page" : undefined}>
              {n.label}
            </Link>
          ))}
        </nav>
        <span class="spacer" />
        {token() ? (
          <button type="button" class="quiet" onClick={() => (setToken(""), setReload((r) => r + 1))}>
            Forget token
          </button>
        ) : (
          <button type="button" class="quiet" aria-expanded={showToken} onClick={() => setShowToken(!showToken)}>
            Token
          </button>
        )}
      </header>
      {(authProblem || showToken) && (
        <TokenForm
          problem={authProblem}
          onDone={() => {
            setShowToken(false);
            setReload((r) => r + 1);
          }}
        />
      )}
      <Page key={reload} location={location} />
    </>
  );
}

const root = document.getElementById("app");
if (root) render(<App />, root);
