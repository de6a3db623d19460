"""One action per loop language that does, by its `mode` parameter, what the runtime tests check; and a
multi-file (zip) action per language. Kept apart from the tests: bench/runtimes.py runs them too."""

from __future__ import annotations

import base64
import io
import zipfile

# Every program: mode "hello" (default) -> {"greeting": "Hello <name>"}; "error" -> {"error": "bad input"};
# "raise" -> an exception / panic with the message "boom"; "log" -> prints "hello from the action" and returns
# {}; "env" -> {"id": __OW_ACTIVATION_ID, "ns": __OW_NAMESPACE}; "sleep" -> never returns.

NATIVE = r"""#!/bin/bash
mode=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1]).get("mode", "hello"))' "$1")
name=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1]).get("name", ""))' "$1")
case "$mode" in
  error) echo '{"error": "bad input"}' ;;
  raise) echo "boom" >&2; exit 3 ;;
  log) echo "hello from the action"; echo '{}' ;;
  env) echo "{\"id\": \"$__OW_ACTIVATION_ID\", \"ns\": \"$__OW_NAMESPACE\"}" ;;
  sleep) sleep 3600 ;;
  *) echo "{\"greeting\": \"Hello $name\"}" ;;
esac
"""

GO = """package main

import (
	"fmt"
	"os"
	"time"
)

func Main(args map[string]interface{}) map[string]interface{} {
	mode, _ := args["mode"].(string)
	name, _ := args["name"].(string)
	switch mode {
	case "error":
		return map[string]interface{}{"error": "bad input"}
	case "raise":
		panic("boom")
	case "log":
		fmt.Println("hello from the action")
		return map[string]interface{}{}
	case "env":
		return map[string]interface{}{"id": os.Getenv("__OW_ACTIVATION_ID"), "ns": os.Getenv("__OW_NAMESPACE")}
	case "sleep":
		time.Sleep(time.Hour)
	}
	return map[string]interface{}{"greeting": "Hello " + name}
}
"""

JAVA = """import com.google.gson.JsonObject;

public class Hello {
    public static JsonObject main(JsonObject args) throws Exception {
        String mode = args.has("mode") ? args.get("mode").getAsString() : "hello";
        JsonObject result = new JsonObject();
        switch (mode) {
            case "error": result.addProperty("error", "bad input"); break;
            case "raise": throw new IllegalStateException("boom");
            case "log": System.out.println("hello from the action"); break;
            case "env":
                result.addProperty("id", System.getenv("__OW_ACTIVATION_ID"));
                result.addProperty("ns", System.getenv("__OW_NAMESPACE"));
                break;
            case "sleep": Thread.sleep(3_600_000); break;
            default: result.addProperty("greeting", "Hello " + args.get("name").getAsString());
        }
        return result;
    }
}
"""

RUBY = """def main(params)
  case params['mode']
  when 'error' then { 'error' => 'bad input' }
  when 'raise' then raise 'boom'
  when 'log' then puts 'hello from the action'; {}
  when 'env' then { 'id' => ENV['__OW_ACTIVATION_ID'], 'ns' => ENV['__OW_NAMESPACE'] }
  when 'sleep' then sleep 3600
  else { 'greeting' => "Hello #{params['name']}" }
  end
end
"""

PHP = """<?php
function main(array $args): array {
    switch ($args['mode'] ?? 'hello') {
        case 'error': return ['error' => 'bad input'];
        case 'raise': throw new Exception('boom');
        case 'log': echo "hello from the action\\n"; return ['logged' => true];
        case 'env': return ['id' => getenv('__OW_ACTIVATION_ID'), 'ns' => getenv('__OW_NAMESPACE')];
        case 'sleep': sleep(3600);
    }
    return ['greeting' => 'Hello ' . $args['name']];
}
"""

RUST = """use serde_json::{json, Error, Value};

pub fn main(args: Value) -> Result<Value, Error> {
    let name = args["name"].as_str().unwrap_or("");
    match args["mode"].as_str().unwrap_or("hello") {
        "error" => Ok(json!({"error": "bad input"})),
        "raise" => panic!("boom"),
        "log" => {
            println!("hello from the action");
            Ok(json!({}))
        }
        "env" => Ok(json!({
            "id": std::env::var("__OW_ACTIVATION_ID").unwrap_or_default(),
            "ns": std::env::var("__OW_NAMESPACE").unwrap_or_default(),
        })),
        "sleep" => {
            std::thread::sleep(std::time::Duration::from_secs(3600));
            Ok(json!({}))
        }
        _ => Ok(json!({"greeting": format!("Hello {}", name)})),
    }
}
"""

PROGRAMS: dict[str, tuple[str, str]] = {  # kind -> (code, main)
    "native": (NATIVE, "main"),
    "go:1.19": (GO, "main"),
    "java:17": (JAVA, "Hello"),
    "ruby:3.1": (RUBY, "main"),
    "php:8.2": (PHP, "main"),
    "rust:1.63": (RUST, "main"),
}

# Multi-file actions: each returns {"helper": "from a second file"} from a function in another file.
ZIPS: dict[str, tuple[dict[str, str], str]] = {
    "native": (
        {
            "exec": '#!/bin/sh\necho "{\\"helper\\": \\"$(cat helper.txt)\\"}"\n',
            "helper.txt": "from a second file",
        },
        "main",
    ),
    "go:1.19": (
        {
            "go.mod": "module action\n\ngo 1.19\n",
            "main.go": "package main\n\nfunc Main(args map[string]interface{}) map[string]interface{} {\n"
            '\treturn map[string]interface{}{"helper": helper()}\n}\n',
            "helper.go": 'package main\n\nfunc helper() string { return "from a second file" }\n',
        },
        "main",
    ),
    "java:17": (
        {
            "Hello.java": "import com.google.gson.JsonObject;\npublic class Hello {\n"
            "  public static JsonObject main(JsonObject args) {\n    JsonObject r = new JsonObject();\n"
            '    r.addProperty("helper", Helper.text());\n    return r;\n  }\n}\n',
            "Helper.java": 'public class Helper {\n  static String text() { return "from a second file"; }\n}\n',
        },
        "Hello",
    ),
    "ruby:3.1": (
        {
            "main.rb": "require_relative 'helper'\ndef main(params)\n  { 'helper' => helper_text }\nend\n",
            "helper.rb": "def helper_text\n  'from a second file'\nend\n",
        },
        "main",
    ),
    "php:8.2": (
        {
            "index.php": "<?php\nrequire __DIR__ . '/helper.php';\n"
            "function main(array $args): array { return ['helper' => helper_text()]; }\n",
            "helper.php": "<?php\nfunction helper_text(): string { return 'from a second file'; }\n",
        },
        "main",
    ),
    "rust:1.63": (
        {
            "Cargo.toml": '[package]\nname = "actions"\nversion = "0.1.0"\nedition = "2021"\n\n'
            '[dependencies]\nserde_json = "1"\n',
            "src/lib.rs": "mod helper;\nuse serde_json::{json, Error, Value};\n"
            "pub fn main(_args: Value) -> Result<Value, Error> {\n"
            '    Ok(json!({"helper": helper::text()}))\n}\n',
            "src/helper.rs": 'pub fn text() -> &\'static str {\n    "from a second file"\n}\n',
        },
        "main",
    ),
}


def zip_code(files: dict[str, str], executable: tuple[str, ...] = ("exec",)) -> str:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in files.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o755 if name in executable else 0o644) << 16
            archive.writestr(info, text)
    return base64.b64encode(buffer.getvalue()).decode()


# Hostile actions (tests/e2e/test_runtimes_hostile.py), by `mode`: "bomb" starts a shell fork bomb and waits;
# "hog" allocates 1 MiB blocks until refused; "flood" prints `mb` MiB of 1 KiB lines, then "after the flood";
# "big" returns a 5 MB result; anything else returns {"calm": true}.
GO_HOSTILE = """package main

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"
)

var hoard [][]byte

func Main(args map[string]interface{}) map[string]interface{} {
	mode, _ := args["mode"].(string)
	switch mode {
	case "bomb":
		exec.Command("/bin/sh", "-c", "b() { b | b & }; b").Start()
		time.Sleep(time.Hour)
	case "hog":
		for i := 0; i < 4096; i++ {
			block := make([]byte, 1<<20)
			for j := range block {
				block[j] = 1
			}
			hoard = append(hoard, block)
		}
		return map[string]interface{}{"stopped_at_mb": len(hoard)}
	case "flood":
		line := strings.Repeat("x", 1023) + "\\n"
		chunk := strings.Repeat(line, 1024)
		mb, _ := args["mb"].(float64)
		for i := 0; i < int(mb); i++ {
			os.Stdout.WriteString(chunk)
		}
		fmt.Println("after the flood")
		return map[string]interface{}{"done": true}
	case "big":
		return map[string]interface{}{"big": strings.Repeat("x", 5000000)}
	}
	return map[string]interface{}{"calm": true}
}
"""

JAVA_HOSTILE = """import com.google.gson.JsonObject;
import java.util.ArrayList;
import java.util.List;

public class Hostile {
    static List<byte[]> hoard = new ArrayList<>();

    public static JsonObject main(JsonObject args) throws Exception {
        String mode = args.has("mode") ? args.get("mode").getAsString() : "";
        JsonObject result = new JsonObject();
        switch (mode) {
            case "bomb":
                try {  // the bomb may take the last of the container's processes before the JVM's reaper thread
                    new ProcessBuilder("/bin/sh", "-c", "b() { b | b & }; b").start();
                } catch (Throwable e) {
                    System.err.println("the bomb is loose: " + e);
                }
                Thread.sleep(3_600_000);
                break;
            case "hog":
                try {
                    for (int i = 0; i < 4096; i++) hoard.add(new byte[1 << 20]);
                } catch (OutOfMemoryError e) {
                    int stopped = hoard.size();
                    hoard.clear();
                    result.addProperty("stopped_at_mb", stopped);
                }
                break;
            case "flood":
                String chunk = ("x".repeat(1023) + "\\n").repeat(1024);
                for (int i = 0; i < args.get("mb").getAsInt(); i++) System.out.print(chunk);
                System.out.println("after the flood");
                result.addProperty("done", true);
                break;
            case "big": result.addProperty("big", "x".repeat(5_000_000)); break;
            default: result.addProperty("calm", true);
        }
        return result;
    }
}
"""

HOSTILE: dict[str, tuple[str, str]] = {"go:1.19": (GO_HOSTILE, "main"), "java:17": (JAVA_HOSTILE, "Hostile")}
