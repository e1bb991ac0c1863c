package org.tfprune.demo

import android.content.Context
import android.os.SystemClock
import org.json.JSONObject
import org.tensorflow.lite.Interpreter
import java.io.FileInputStream
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.nio.MappedByteBuffer
import java.nio.channels.FileChannel
import kotlin.math.roundToInt

/** Asset names; everything else about the models is read from model_spec.json. */
const val SPEC_ASSET = "model_spec.json"

/** One model of model_spec.json: a full-int8 MNIST classifier [1, 784] -> [1, 10]. */
class DigitClassifier(context: Context, spec: JSONObject) : AutoCloseable {
    private val input = spec.getJSONObject("input")
    private val output = spec.getJSONObject("output")
    private val inputScale = input.getDouble("scale").toFloat()
    private val inputZeroPoint = input.getInt("zero_point")
    private val numPixels = shapeSize(input)
    private val numClasses = shapeSize(output)
    private val interpreter = Interpreter(mapAsset(context, spec.getString("file")))
    private val inputBuffer = ByteBuffer.allocateDirect(numPixels).order(ByteOrder.nativeOrder())
    private val outputBuffer = ByteBuffer.allocateDirect(numClasses).order(ByteOrder.nativeOrder())

    init {
        // The names, shapes and dtypes the code relies on (also checked by
        // tests/demo_android_test.py against the .tflite files).
        val inT = interpreter.getInputTensor(0)
        val outT = interpreter.getOutputTensor(0)
        check(inT.name() == input.getString("name") && input.getString("dtype") == "int8")
        check(outT.name() == output.getString("name") && output.getString("dtype") == "int8")
        check(inT.numElements() == numPixels && outT.numElements() == numClasses)
    }

    /** Classifies one 28x28 uint8 digit; returns the predicted class. */
    fun classify(pixels: ByteArray): Int {
        inputBuffer.rewind()
        for (i in 0 until numPixels) {
            val p = (pixels[i].toInt() and 0xff) / 255f
            val q = (p / inputScale).roundToInt() + inputZeroPoint
            inputBuffer.put(q.coerceIn(-128, 127).toByte())
        }
        inputBuffer.rewind()
        outputBuffer.rewind()
        interpreter.run(inputBuffer, outputBuffer)
        var best = 0
        for (c in 1 until numClasses) {
            if (outputBuffer.get(c) > outputBuffer.get(best)) best = c
        }
        return best
    }

    /** Mean latency of classify() in microseconds over `runs` passes of `digits`. */
    fun latencyMicros(digits: List<ByteArray>, runs: Int = 50): Double {
        digits.forEach { classify(it) }  // warm-up
        val start = SystemClock.elapsedRealtimeNanos()
        repeat(runs) { digits.forEach { classify(it) } }
        return (SystemClock.elapsedRealtimeNanos() - start) / 1000.0 / (runs * digits.size)
    }

    override fun close() = interpreter.close()

    companion object {
        fun loadSpec(context: Context): JSONObject =
            JSONObject(context.assets.open(SPEC_ASSET).bufferedReader().use { it.readText() })

        /** The bundled digits: digits.file holds count * height * width uint8 pixels. */
        fun loadDigits(context: Context, spec: JSONObject): List<ByteArray> {
            val digits = spec.getJSONObject("digits")
            val size = digits.getInt("height") * digits.getInt("width")
            val bytes = context.assets.open(digits.getString("file")).use { it.readBytes() }
            return (0 until digits.getInt("count")).map { bytes.copyOfRange(it * size, (it + 1) * size) }
        }

        private fun shapeSize(tensor: JSONObject): Int {
            val shape = tensor.getJSONArray("shape")
            return (0 until shape.length()).fold(1) { acc, i -> acc * shape.getInt(i) }
        }

        private fun mapAsset(context: Context, name: String): MappedByteBuffer {
            val fd = context.assets.openFd(name)  // works because of noCompress "tflite"
            FileInputStream(fd.fileDescriptor).use { stream ->
                return stream.channel.map(FileChannel.MapMode.READ_ONLY, fd.startOffset, fd.declaredLength)
            }
        }
    }
}
