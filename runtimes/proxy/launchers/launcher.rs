// Squall's Rust launcher for the action loop, compiled with the action (OpenWhisk's Rust conventions: a crate
// `actions` with `pub fn main(args: Value) -> Result<Value, Error>`; the proxy renames main after the action's
// `main`). Acks on fd 3, then one activation per JSON line on stdin, one JSON line back on fd 3. A panic gives
// {"error": "..."} (its message is on stderr); the container stays usable.
use std::io::{BufRead, Write};
use std::os::unix::io::FromRawFd;

fn main() {
    let mut replies = unsafe { std::fs::File::from_raw_fd(3) };
    replies.write_all(b"{\"ok\":true}\n").unwrap();
    let stdin = std::io::stdin();
    let mut exported: Vec<String> = Vec::new();
    for line in stdin.lock().lines() {
        let line = match line {
            Ok(line) => line,
            Err(_) => break,
        };
        let message: serde_json::Value = serde_json::from_str(&line).unwrap_or(serde_json::Value::Null);
        for name in exported.drain(..) {
            std::env::remove_var(name);
        }
        let mut args = serde_json::Value::Object(serde_json::Map::new());
        if let serde_json::Value::Object(map) = message {
            for (key, val) in map {
                if key == "value" {
                    args = val;
                    continue;
                }
                let text = match val {
                    serde_json::Value::Null => continue,
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                };
                let name = format!("__OW_{}", key.to_uppercase());
                std::env::set_var(&name, text);
                exported.push(name);
            }
        }
        let result = match std::panic::catch_unwind(move || actions::main(args)) {
            Ok(Ok(value)) => value,
            Ok(Err(err)) => serde_json::json!({ "error": err.to_string() }),
            Err(panic) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "the action panicked".to_string());
                serde_json::json!({ "error": format!("panic: {}", message) })
            }
        };
        let _ = std::io::stdout().flush();
        let _ = writeln!(replies, "{}", result);
    }
}
