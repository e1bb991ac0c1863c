package org.tfprune.demo

import android.os.Bundle
import android.widget.TextView
import androidx.appcompat.app.AppCompatActivity

/** Classifies the bundled digits with the sparse model; shows dense vs sparse latency. */
class MainActivity : AppCompatActivity() {
    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContentView(R.layout.activity_main)
        val view = findViewById<TextView>(R.id.results)
        Thread {
            val text = runDemo()
            runOnUiThread { view.text = text }
        }.start()
    }

    private fun runDemo(): String {
        val spec = DigitClassifier.loadSpec(this)
        val digits = DigitClassifier.loadDigits(this, spec)
        val labels = spec.getJSONObject("digits").getJSONArray("labels")
        val models = spec.getJSONObject("models")
        val out = StringBuilder()
        DigitClassifier(this, models.getJSONObject("sparse")).use { sparse ->
            digits.forEachIndexed { i, d ->
                out.append("digit ${labels.getInt(i)} -> ${sparse.classify(d)}\n")
            }
            val sparseUs = sparse.latencyMicros(digits)
            val denseUs = DigitClassifier(this, models.getJSONObject("dense")).use {
                it.latencyMicros(digits)
            }
            out.append("\nlatency per digit (1 thread):\n")
            out.append("  dense int8  %.1f us\n".format(denseUs))
            out.append("  sparse int8 %.1f us\n".format(sparseUs))
        }
        return out.toString()
    }
}
