package dcstore.minidfs;

import java.io.BufferedReader;
import java.io.File;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.io.PrintWriter;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.StandardCopyOption;
import java.util.ArrayDeque;
import java.util.Deque;
import java.util.HashMap;
import java.util.Map;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.hdfs.HdfsConfiguration;
import org.apache.hadoop.hdfs.MiniDFSCluster;
import org.apache.hadoop.hdfs.MiniDFSCluster.DataNodeProperties;
import org.apache.hadoop.hdfs.server.datanode.DataNode;

/**
 * A MiniDFSCluster (one NameNode, N DataNodes) on 127.0.0.1 for dcstore's tests and benchmarks.
 *
 * <p>Options: --base-dir DIR (required), --nn-port 9000, --http-port 9870, --control-port 9871,
 * --datanodes 1, --replication 1, --block-size 16777216, --conf "key=value;key=value" (extra
 * Hadoop settings, applied last).
 *
 * <p>Once the cluster is active it writes DIR/conf/{core,hdfs}-site.xml (a HADOOP_CONF_DIR for
 * clients), DIR/ready (the NameNode URL), and prints "READY hdfs://...". A control port on
 * 127.0.0.1 takes one command per connection and answers one line starting "OK" or "ERR":
 * ping, status, stop-datanode [i], restart-datanodes, stop-namenode, restart-namenode, shutdown.
 * SIGTERM shuts the cluster down cleanly.
 */
public final class Main {
  private final MiniDFSCluster cluster;
  private final Deque<DataNodeProperties> stopped = new ArrayDeque<>();
  private boolean nameNodeUp = true;
  private volatile boolean running = true;

  private Main(MiniDFSCluster cluster) {
    this.cluster = cluster;
  }

  public static void main(String[] args) throws Exception {
    Map<String, String> opt = parse(args);
    File baseDir = new File(require(opt, "base-dir")).getAbsoluteFile();
    int nnPort = Integer.parseInt(opt.getOrDefault("nn-port", "9000"));
    int httpPort = Integer.parseInt(opt.getOrDefault("http-port", "9870"));
    int controlPort = Integer.parseInt(opt.getOrDefault("control-port", "9871"));
    int dataNodes = Integer.parseInt(opt.getOrDefault("datanodes", "1"));
    String replication = opt.getOrDefault("replication", "1");
    String blockSize = opt.getOrDefault("block-size", "16777216");

    Configuration conf = new HdfsConfiguration();
    conf.set("dfs.replication", replication);
    conf.set("dfs.blocksize", blockSize);
    conf.set("dfs.namenode.handler.count", "8");
    conf.set("dfs.datanode.handler.count", "4");
    conf.set("dfs.namenode.safemode.extension", "0");
    conf.set("dfs.heartbeat.interval", "1");
    // A stopped DataNode is declared dead after ~2*recheck + 10*heartbeat = 12 s.
    conf.set("dfs.namenode.heartbeat.recheck-interval", "1000");
    conf.set("dfs.namenode.redundancy.interval.seconds", "1");
    conf.set("dfs.webhdfs.enabled", "true");
    conf.set("hadoop.security.authentication", "simple");
    conf.set("dfs.permissions.enabled", "true");
    conf.set("dfs.namenode.rpc-bind-host", "127.0.0.1");
    conf.set("dfs.namenode.http-bind-host", "127.0.0.1");
    for (String pair : opt.getOrDefault("conf", "").split(";")) {
      if (!pair.isBlank()) {
        int eq = pair.indexOf('=');
        if (eq <= 0) {
          throw new IllegalArgumentException("--conf expects key=value pairs, got '" + pair + "'");
        }
        conf.set(pair.substring(0, eq).trim(), pair.substring(eq + 1).trim());
      }
    }

    MiniDFSCluster cluster =
        new MiniDFSCluster.Builder(conf, new File(baseDir, "data"))
            .nameNodePort(nnPort)
            .nameNodeHttpPort(httpPort)
            .numDataNodes(dataNodes)
            .storagesPerDatanode(1)
            .format(true)
            .build();
    cluster.waitActive();
    Main main = new Main(cluster);
    Runtime.getRuntime().addShutdownHook(new Thread(main::shutdown, "minidfs-shutdown"));

    String url = "hdfs://127.0.0.1:" + cluster.getNameNodePort();
    writeClientConf(cluster, url, new File(baseDir, "conf"));
    writeAtomically(new File(baseDir, "ready"), url + "\n");
    System.out.println("READY " + url + " http=127.0.0.1:" + httpPort
        + " control=127.0.0.1:" + controlPort + " datanodes=" + dataNodes
        + " replication=" + replication);
    System.out.flush();
    main.serve(controlPort);
  }

  private void serve(int port) throws IOException {
    try (ServerSocket server = new ServerSocket()) {
      server.setReuseAddress(true);
      server.bind(new InetSocketAddress(InetAddress.getLoopbackAddress(), port));
      while (running) {
        try (Socket socket = server.accept()) {
          BufferedReader in = new BufferedReader(
              new InputStreamReader(socket.getInputStream(), StandardCharsets.UTF_8));
          PrintWriter out = new PrintWriter(socket.getOutputStream(), true, StandardCharsets.UTF_8);
          String line = in.readLine();
          String reply;
          try {
            reply = "OK " + handle(line == null ? "" : line.trim());
          } catch (Exception e) {
            reply = "ERR " + e.getClass().getSimpleName() + ": " + e.getMessage();
          }
          out.println(reply.replace('\n', ' '));
        }
      }
    }
    System.exit(0);
  }

  private synchronized String handle(String line) throws IOException {
    String[] words = line.split("\\s+");
    switch (words[0]) {
      case "ping":
        return "pong";
      case "status":
        return status();
      case "stop-datanode": {
        int index = words.length > 1 ? Integer.parseInt(words[1]) : 0;
        DataNodeProperties props = cluster.stopDataNode(index);
        if (props == null) {
          throw new IllegalArgumentException("no running datanode " + index);
        }
        stopped.push(props);
        return "stopped datanode " + props.getDatanode().getXferAddress();
      }
      case "restart-datanodes": {
        int count = 0;
        while (!stopped.isEmpty()) {
          restartKeepingPort(stopped.pop());
          count++;
        }
        cluster.waitActive();
        return "restarted " + count + " datanodes";
      }
      case "stop-namenode":
        cluster.shutdownNameNode(0);
        nameNodeUp = false;
        return "namenode stopped";
      case "restart-namenode":
        cluster.restartNameNode(0, true);
        nameNodeUp = true;
        return "namenode restarted";
      case "shutdown":
        running = false;
        return "shutting down";
      default:
        throw new IllegalArgumentException("unknown command '" + line + "'");
    }
  }

  /**
   * Restart a stopped DataNode on its old ports. The kernel can refuse the port for a moment
   * after the stop (seen in the chaos test: "BindException: Address already in use" 2 s after
   * a stop), so a bind failure is retried for up to 15 s; any other failure is raised at once.
   */
  private void restartKeepingPort(DataNodeProperties props) throws IOException {
    long deadline = System.nanoTime() + 15_000_000_000L;
    while (true) {
      try {
        cluster.restartDataNode(props, true);
        return;
      } catch (IOException e) {
        if (!causedByBind(e) || System.nanoTime() > deadline) {
          throw e;
        }
        try {
          Thread.sleep(250);
        } catch (InterruptedException interrupted) {
          Thread.currentThread().interrupt();
          throw e;
        }
      }
    }
  }

  private static boolean causedByBind(Throwable e) {
    for (Throwable t = e; t != null; t = t.getCause()) {
      if (t instanceof java.net.BindException) {
        return true;
      }
    }
    return false;
  }

  private String status() {
    StringBuilder sb = new StringBuilder();
    sb.append("namenode=").append(nameNodeUp ? "up" : "down");
    sb.append(" datanodes=");
    for (DataNode dn : cluster.getDataNodes()) {
      sb.append(dn.getXferAddress()).append(',');
    }
    sb.append(" stopped=").append(stopped.size());
    return sb.toString();
  }

  private synchronized void shutdown() {
    try {
      cluster.shutdown(true);
    } catch (Throwable t) {
      System.err.println("shutdown: " + t);
    }
  }

  private static void writeClientConf(MiniDFSCluster cluster, String url, File dir)
      throws IOException {
    Files.createDirectories(dir.toPath());
    Configuration core = new Configuration(false);
    core.set("fs.defaultFS", url);
    try (OutputStream out = new FileOutputStream(new File(dir, "core-site.xml"))) {
      core.writeXml(out);
    }
    Configuration hdfs = new Configuration(false);
    hdfs.set("dfs.replication", cluster.getConfiguration(0).get("dfs.replication"));
    hdfs.set("dfs.blocksize", cluster.getConfiguration(0).get("dfs.blocksize"));
    hdfs.set("dfs.namenode.http-address", cluster.getNameNode().getHttpAddress().getHostString()
        + ":" + cluster.getNameNode().getHttpAddress().getPort());
    try (OutputStream out = new FileOutputStream(new File(dir, "hdfs-site.xml"))) {
      hdfs.writeXml(out);
    }
  }

  private static void writeAtomically(File target, String text) throws IOException {
    File tmp = new File(target.getPath() + ".tmp");
    Files.writeString(tmp.toPath(), text, StandardCharsets.UTF_8);
    Files.move(tmp.toPath(), target.toPath(), StandardCopyOption.REPLACE_EXISTING,
        StandardCopyOption.ATOMIC_MOVE);
  }

  private static Map<String, String> parse(String[] args) {
    Map<String, String> opt = new HashMap<>();
    for (int i = 0; i < args.length; i++) {
      if (!args[i].startsWith("--") || i + 1 >= args.length) {
        throw new IllegalArgumentException("usage: --name value ... (got '" + args[i] + "')");
      }
      opt.put(args[i].substring(2), args[++i]);
    }
    return opt;
  }

  private static String require(Map<String, String> opt, String name) {
    String value = opt.get(name);
    if (value == null) {
      throw new IllegalArgumentException("--" + name + " is required");
    }
    return value;
  }
}
