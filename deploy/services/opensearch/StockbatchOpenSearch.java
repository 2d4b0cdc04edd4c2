/*
 * stockbatch's launcher of a single OpenSearch node (compiled once by
 * src/stockbatch/services/opensearch.py with `javac`, next to the jars in the cache).
 *
 * Why not org.opensearch.bootstrap.OpenSearch: that entry point expects the
 * distribution's layout (modules/<name>/ folders with plugin descriptors and
 * security policies that Maven Central does not publish). Here the official jars
 * from Maven Central sit on one classpath and the modules are loaded as classpath
 * plugins, the way OpenSearch's own test clusters (and the codelibs runner) do.
 *
 * Usage: java -cp 'libs/*[:security/*]:launcher' StockbatchOpenSearch <path.home> <config dir>
 *            [<plugin class>...]
 * The config dir holds opensearch.yml and log4j2.properties. Extra arguments name more
 * classpath plugins to load after the modules: the secured node passes
 * org.opensearch.security.OpenSearchSecurityPlugin (its jars in security/). SIGTERM closes the node
 * cleanly (shutdown hook); the exit code is 1 when the node cannot start.
 */

import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.Collection;
import java.util.Collections;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import org.opensearch.common.logging.LogConfigurator;
import org.opensearch.common.settings.Settings;
import org.opensearch.env.Environment;
import org.opensearch.node.InternalSettingsPreparer;
import org.opensearch.node.Node;
import org.opensearch.plugins.Plugin;

public final class StockbatchOpenSearch {

    /** The modules the distribution would load from modules/ that stockbatch uses. */
    static final String[] MODULES = {
        "org.opensearch.transport.Netty4Plugin", // HTTP + transport layers
        "org.opensearch.analysis.common.CommonAnalysisPlugin", // standard filters, edge_ngram
        "org.opensearch.index.mapper.MapperExtrasPlugin", // search_as_you_type, scaled_float
        "org.opensearch.painless.PainlessPlugin", // scripts
    };

    /** A node whose plugins come from the classpath (Node's constructor for that is protected). */
    static final class ClasspathNode extends Node {
        ClasspathNode(Environment env, Collection<Class<? extends Plugin>> plugins) {
            super(env, plugins, true);
        }
    }

    public static void main(String[] args) throws Exception {
        if (args.length < 2) {
            System.err.println("usage: StockbatchOpenSearch <path.home> <config dir> [<plugin class>...]");
            System.exit(2);
        }
        Path home = Paths.get(args[0]).toAbsolutePath();
        Path config = Paths.get(args[1]).toAbsolutePath();
        List<Class<? extends Plugin>> plugins = new ArrayList<>();
        for (String name : MODULES) {
            plugins.add(Class.forName(name).asSubclass(Plugin.class));
        }
        for (int i = 2; i < args.length; i++) {
            plugins.add(Class.forName(args[i]).asSubclass(Plugin.class));
        }
        Settings input = Settings.builder().put("path.home", home.toString()).build();
        Environment env = InternalSettingsPreparer.prepareEnvironment(
            input, Collections.emptyMap(), config, () -> "stockbatch");
        LogConfigurator.registerErrorListener();
        LogConfigurator.setNodeName(Node.NODE_NAME_SETTING.get(env.settings())); // %node_name in logs
        LogConfigurator.configure(env);

        CountDownLatch closed = new CountDownLatch(1);
        Node node = new ClasspathNode(env, plugins);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                node.close();
                node.awaitClose(20, TimeUnit.SECONDS);
            } catch (Exception e) {
                e.printStackTrace();
            } finally {
                closed.countDown();
            }
        }, "stockbatch-shutdown"));
        try {
            node.start();
        } catch (Throwable t) {
            System.err.println("stockbatch: the OpenSearch node failed to start: " + t);
            t.printStackTrace();
            // halt: the shutdown hook would wait on a node that never started
            Runtime.getRuntime().halt(1);
        }
        System.out.println("stockbatch: OpenSearch node started");
        closed.await(); // the node's threads are daemons: keep the JVM alive until SIGTERM
    }
}
