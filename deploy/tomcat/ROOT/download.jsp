<%--
  download.jsp?bytes=N[&seed=S][&chunked=1]

  Streams N deterministic pseudo-random bytes (0 <= N <= 2^40), generated
  block by block so memory use does not grow with N. With chunked=1 no
  Content-Length is sent and Tomcat frames the body with chunked encoding
  (or closes the connection at the end for an HTTP/1.0 client).
  HEAD answers the headers only. No session is created.

  The stream, reproducible anywhere (tests/e2e/tomcat.py pattern_chunks()):
    seed   = UTF-8 bytes of S (default "edgepin"), at most 256 bytes
    u64(x) = x as 8 bytes, big-endian
    base   = SHA256(seed || "base" || u64(0)) || ... || SHA256(seed || "base" || u64(2047))
             (65536 bytes)
    mask_i = SHA256(seed || "block" || u64(i))   (32 bytes)
    block_i[k] = base[k] XOR mask_i[k mod 32]     for k in 0..65535
    stream = block_0 || block_1 || ... cut to N bytes
  Every 64 KiB block differs from every other, so a proxy that drops,
  repeats or reorders blocks changes the stream's SHA-256.
--%><%@ page session="false" trimDirectiveWhitespaces="true"
    import="java.io.IOException,java.nio.charset.StandardCharsets,java.security.MessageDigest"
%><%!
    private static final int BLOCK_BYTES = 65536;
    private static final int DIGEST_BYTES = 32;
    private static final long MAX_BYTES = 1L << 40;
    private static final int MAX_SEED_BYTES = 256;
    private static final byte[] BASE_LABEL = "base".getBytes(StandardCharsets.US_ASCII);
    private static final byte[] BLOCK_LABEL = "block".getBytes(StandardCharsets.US_ASCII);

    private static byte[] u64(long x) {
        byte[] out = new byte[8];
        for (int i = 7; i >= 0; i--) {
            out[i] = (byte) x;
            x >>>= 8;
        }
        return out;
    }

    private static void refuse(HttpServletResponse response, String why) throws IOException {
        response.setStatus(400);
        response.setContentType("text/plain; charset=UTF-8");
        response.getOutputStream().write(("error=" + why + "\n").getBytes(StandardCharsets.UTF_8));
    }
%><%
    response.setHeader("Cache-Control", "no-store");
    long total;
    try {
        total = Long.parseLong(String.valueOf(request.getParameter("bytes")));
    } catch (NumberFormatException e) {
        refuse(response, "bytes must be a decimal byte count");
        return;
    }
    if (total < 0 || total > MAX_BYTES) {
        refuse(response, "bytes must be between 0 and " + MAX_BYTES);
        return;
    }
    String seedParam = request.getParameter("seed");
    byte[] seed = (seedParam == null ? "edgepin" : seedParam).getBytes(StandardCharsets.UTF_8);
    if (seed.length > MAX_SEED_BYTES) {
        refuse(response, "seed longer than " + MAX_SEED_BYTES + " bytes");
        return;
    }

    response.setContentType("application/octet-stream");
    response.setHeader("X-Edgepin-Node", System.getProperty("edgepin.node", ""));
    boolean chunked = "1".equals(request.getParameter("chunked"));
    if (!chunked) {
        response.setContentLengthLong(total);
    }
    if ("HEAD".equals(request.getMethod())) {
        return;
    }
    if (chunked) {
        // Commit the headers now: a body that fits in Tomcat's output
        // buffer would otherwise get a Content-Length when the page ends.
        response.flushBuffer();
    }

    MessageDigest sha256 = MessageDigest.getInstance("SHA-256");
    byte[] base = new byte[BLOCK_BYTES];
    for (int j = 0; j < BLOCK_BYTES / DIGEST_BYTES; j++) {
        sha256.update(seed);
        sha256.update(BASE_LABEL);
        sha256.update(u64(j));
        sha256.digest(base, j * DIGEST_BYTES, DIGEST_BYTES);
    }

    byte[] block = new byte[BLOCK_BYTES];
    ServletOutputStream body = response.getOutputStream();
    try {
        long sent = 0;
        for (long i = 0; sent < total; i++) {
            sha256.update(seed);
            sha256.update(BLOCK_LABEL);
            sha256.update(u64(i));
            byte[] mask = sha256.digest();
            for (int k = 0; k < BLOCK_BYTES; k++) {
                block[k] = (byte) (base[k] ^ mask[k & (DIGEST_BYTES - 1)]);
            }
            int n = (int) Math.min(BLOCK_BYTES, total - sent);
            body.write(block, 0, n);
            sent += n;
        }
    } catch (IOException clientGone) {
        // The client closed the connection: nothing left to send it, and
        // not an error of this page.
        return;
    }
%>
