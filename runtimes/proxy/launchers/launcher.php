<?php
// Squall's PHP launcher for the action loop (OpenWhisk's PHP conventions: `function main(array $args): array`
// in index.php, vendor/autoload.php loaded when present). Acks on fd 3, then one activation per JSON line on
// stdin, one JSON line back on fd 3. An exception prints to stderr and gives {"error": message}.
[, $dir, $entry] = $argv;
chdir($dir);
if (file_exists("$dir/vendor/autoload.php")) {
    require "$dir/vendor/autoload.php";
}
require "$dir/index.php";
if (!function_exists($entry)) {
    fwrite(STDERR, "The action does not define '$entry'.\n");
    exit(1);
}
$replies = fopen('php://fd/3', 'w');
fwrite($replies, "{\"ok\":true}\n");
$exported = [];
while (($line = fgets(STDIN)) !== false) {
    $message = json_decode($line, true);
    foreach ($exported as $name) {
        putenv($name);
        unset($_ENV[$name]);
    }
    $exported = [];
    foreach ($message as $key => $val) {
        if ($key === 'value' || $val === null) {
            continue;
        }
        $name = '__OW_' . strtoupper($key);
        $text = is_string($val) ? $val : json_encode($val);
        putenv("$name=$text");
        $_ENV[$name] = $text;
        $exported[] = $name;
    }
    try {
        $result = $entry($message['value'] ?? []);
        $reply = is_array($result) || is_object($result)
            ? json_encode($result, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE | JSON_PRESERVE_ZERO_FRACTION)
            : 'null';
        if ($reply === false) {
            fwrite(STDERR, 'The result is not JSON: ' . json_last_error_msg() . "\n");
            $reply = 'null';
        }
    } catch (Throwable $e) {
        fwrite(STDERR, (string) $e . "\n");
        $reply = json_encode(['error' => $e->getMessage()]);
    }
    fwrite($replies, $reply . "\n");
    fflush($replies);
}
