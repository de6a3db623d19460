// Squall's Java launcher for the action loop: loads the action's class, acks on fd 3, then runs one activation
// per JSON line read on stdin and writes its result as one JSON line on fd 3 (OpenWhisk's Java conventions:
// `public static JsonObject main(JsonObject)`, `main` names the class, `Class#method` another method).
// Compiled into the java image when it is built (the image carries no javac binary, but its jimage has
// jdk.compiler).

import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import java.io.BufferedReader;
import java.io.FileOutputStream;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.lang.reflect.Field;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Method;
import java.lang.reflect.Modifier;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

public final class SquallLauncher {
    public static void main(String[] argv) throws Exception {
        String entry = argv.length > 0 && !argv[0].isEmpty() ? argv[0] : "Main";
        String className = entry;
        String methodName = "main";
        int hash = entry.indexOf('#');
        if (hash >= 0) {
            className = entry.substring(0, hash);
            methodName = entry.substring(hash + 1);
        }
        Method method;
        try {
            Class<?> cls = Class.forName(className, true, SquallLauncher.class.getClassLoader());
            method = cls.getMethod(methodName, JsonObject.class);
            if (!Modifier.isStatic(method.getModifiers())) {
                throw new NoSuchMethodException(className + "." + methodName + " is not static");
            }
        } catch (Throwable t) {
            System.err.println("Cannot load the action '" + entry + "': " + t);
            System.exit(1);
            return;
        }
        OutputStream out = new FileOutputStream("/dev/fd/3");
        out.write("{\"ok\":true}\n".getBytes(StandardCharsets.UTF_8));
        out.flush();
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        List<String> exported = new ArrayList<>();
        String line;
        while ((line = in.readLine()) != null) {
            String reply;
            try {
                JsonObject input = JsonParser.parseString(line).getAsJsonObject();
                exported = exportEnv(input, exported);
                JsonElement value = input.get("value");
                JsonObject args = value != null && value.isJsonObject() ? value.getAsJsonObject() : new JsonObject();
                Object result = method.invoke(null, args);
                if (result == null) {
                    throw new NullPointerException("The action returned null");
                }
                reply = result.toString();
            } catch (Throwable t) {
                Throwable cause = t instanceof InvocationTargetException && t.getCause() != null ? t.getCause() : t;
                cause.printStackTrace();
                JsonObject error = new JsonObject();
                error.addProperty("error", "An error has occurred (see logs for details): " + cause);
                reply = error.toString();
            }
            System.out.flush();
            System.err.flush();
            out.write((reply + "\n").getBytes(StandardCharsets.UTF_8));
            out.flush();
        }
    }

    /** `__OW_<KEY>` for every key but `value`, visible to System.getenv as OpenWhisk's Java runtime makes them. */
    private static List<String> exportEnv(JsonObject input, List<String> previous) throws Exception {
        Map<String, String> env = writableEnv();
        for (String name : previous) {
            env.remove(name);
        }
        List<String> exported = new ArrayList<>();
        for (Map.Entry<String, JsonElement> e : input.entrySet()) {
            if (e.getKey().equals("value") || e.getValue().isJsonNull()) {
                continue;
            }
            String name = "__OW_" + e.getKey().toUpperCase();
            JsonElement v = e.getValue();
            env.put(name, v.isJsonPrimitive() && v.getAsJsonPrimitive().isString() ? v.getAsString() : v.toString());
            exported.add(name);
        }
        return exported;
    }

    @SuppressWarnings("unchecked")
    private static Map<String, String> writableEnv() throws Exception {
        // System.getenv() is an unmodifiable view of a map the JVM keeps: reach the map behind it
        // (the launcher runs with --add-opens java.base/java.util=ALL-UNNAMED).
        Map<String, String> view = System.getenv();
        Field field = view.getClass().getDeclaredField("m");
        field.setAccessible(true);
        return (Map<String, String>) field.get(view);
    }
}
