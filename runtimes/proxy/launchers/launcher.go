// Squall's Go launcher for the action loop, compiled with the action (OpenWhisk's Go conventions: package
// main, `func Main(map[string]interface{}) map[string]interface{}`; the proxy renames Main after the action's
// `main`). Acks on fd 3, then one activation per JSON line on stdin, one JSON line back on fd 3. A panic prints
// its stack to stderr and gives {"error": "..."}; the container stays usable.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"runtime/debug"
	"strings"
)

func squallRun(args map[string]interface{}) (result map[string]interface{}) {
	defer func() {
		if r := recover(); r != nil {
			fmt.Fprintf(os.Stderr, "panic: %v\n%s", r, debug.Stack())
			result = map[string]interface{}{"error": fmt.Sprintf("panic: %v", r)}
		}
	}()
	return Main(args)
}

func main() {
	replies := os.NewFile(3, "replies")
	replies.Write([]byte("{\"ok\":true}\n"))
	reader := bufio.NewReaderSize(os.Stdin, 1<<20)
	var exported []string
	for {
		line, err := reader.ReadBytes('\n')
		if err != nil && len(line) == 0 {
			return
		}
		var message map[string]interface{}
		if err := json.Unmarshal(line, &message); err != nil {
			fmt.Fprintf(os.Stderr, "cannot decode the activation: %v\n", err)
			replies.Write([]byte("{\"error\":\"cannot decode the activation\"}\n"))
			continue
		}
		for _, name := range exported {
			os.Unsetenv(name)
		}
		exported = exported[:0]
		for key, val := range message {
			if key == "value" || val == nil {
				continue
			}
			name := "__OW_" + strings.ToUpper(key)
			text, ok := val.(string)
			if !ok {
				encoded, _ := json.Marshal(val)
				text = string(encoded)
			}
			os.Setenv(name, text)
			exported = append(exported, name)
		}
		args, _ := message["value"].(map[string]interface{})
		if args == nil {
			args = map[string]interface{}{}
		}
		result := squallRun(args)
		os.Stdout.Sync()
		encoded, err := json.Marshal(result)
		if err != nil {
			fmt.Fprintf(os.Stderr, "the result is not JSON: %v\n", err)
			encoded = []byte("null")
		}
		replies.Write(append(encoded, '\n'))
	}
}
