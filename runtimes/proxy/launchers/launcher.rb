# Squall's Ruby launcher for the action loop (OpenWhisk's Ruby conventions: `def main(params)` in main.rb
# returning a Hash). Loads the action, acks on fd 3, then one activation per JSON line on stdin, one JSON line
# back on fd 3. An exception prints its backtrace to stderr and gives {"error": message}.
require 'json'

$stdout.sync = true
$stderr.sync = true
main_file, entry = ARGV
Dir.chdir(File.dirname(main_file))
$LOAD_PATH.unshift(File.dirname(main_file))
begin
  load main_file
rescue Exception => e
  $stderr.puts e.full_message(highlight: false)
  exit 1
end
unless respond_to?(entry, true)
  $stderr.puts "The action does not define '#{entry}'."
  exit 1
end
replies = IO.new(3, 'w')
replies.sync = true
replies.write("{\"ok\":true}\n")
exported = []
while (line = $stdin.gets)
  message = JSON.parse(line)
  exported.each { |name| ENV.delete(name) }
  exported = []
  message.each do |key, val|
    next if key == 'value' || val.nil?
    name = "__OW_#{key.upcase}"
    ENV[name] = val.is_a?(String) ? val : val.to_json
    exported << name
  end
  begin
    result = send(entry, message['value'] || {})
    reply = result.is_a?(Hash) || result.is_a?(Array) ? JSON.generate(result) : 'null'
  rescue Exception => e
    $stderr.puts e.full_message(highlight: false)
    reply = JSON.generate({ 'error' => e.message })
  end
  replies.write(reply.gsub("\n", ' ') + "\n")
end
