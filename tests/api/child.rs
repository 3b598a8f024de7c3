//! A program the tests talk to over its standard streams: one JSON object per stdout line, a
//! line on stdin to make it go on (the MCP SDK clients in tests/mcp speak this way). Killed on
//! drop; what it (and its own children) wrote to stderr goes into failure messages.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// A hang guard for each line (a stuck child fails the test instead of blocking it), not a
/// timing threshold: the children answer in well under a second here.
const HANG_GUARD: Duration = Duration::from_secs(60);

pub struct LineChild {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
    stderr: tempfile::NamedTempFile,
}

impl LineChild {
    pub fn spawn(mut command: Command) -> Self {
        let stderr = tempfile::NamedTempFile::new().unwrap();
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr.reopen().unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("{command:?}: {e}"));
        Self {
            stdin: child.stdin.take(),
            stdout: BufReader::new(child.stdout.take().unwrap()).lines(),
            stderr,
            child,
        }
    }

    /// What the child and its children wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.stderr.path()).unwrap_or_default()
    }

    /// The next stdout line, as JSON.
    pub async fn next_json(&mut self) -> Value {
        let line = tokio::time::timeout(HANG_GUARD, self.stdout.next_line())
            .await
            .unwrap_or_else(|_| panic!("no line within {HANG_GUARD:?}:\n{}", self.stderr()))
            .unwrap();
        let Some(line) = line else {
            panic!("the child exited:\n{}", self.stderr());
        };
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }

    /// Write `line` (and a newline) to the child's stdin.
    pub async fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
        stdin.flush().await.unwrap();
    }

    /// Close stdin and wait for the child to exit, asserting success.
    pub async fn finish(mut self) {
        drop(self.stdin.take());
        let status = tokio::time::timeout(HANG_GUARD, self.child.wait())
            .await
            .expect("the child exits when its stdin closes")
            .unwrap();
        assert!(status.success(), "{status}:\n{}", self.stderr());
    }
}
